#!/usr/bin/env bash
# Installs (first time, cached) and runs Flywheel's real servers natively on 127.0.0.1:
#   Apache Kafka (KRaft, one combined broker+controller) from Maven Central jars,
#   MinIO built from source with `go install`,
#   PostgreSQL from Debian's packages, in a data directory of its own.
#
#   bash deploy/local/infra.sh up       install what is missing, start what is stopped, wait, print env
#   bash deploy/local/infra.sh env      print the endpoints as `export` lines (eval "$(... env)")
#   bash deploy/local/infra.sh status   say which servers answer
#   bash deploy/local/infra.sh down     stop the servers (data is kept)
#   bash deploy/local/infra.sh reset    stop the servers and delete their data (not the cache)
#
# Every step is idempotent. Settings (environment):
#   FLYWHEEL_CACHE_DIR   built/downloaded servers    (default ${XDG_CACHE_HOME:-~/.cache}/flywheel)
#   FLYWHEEL_LOCAL_DIR   data, logs and pid files    (default ~/.local/state/flywheel/local;
#                        /var/lib/flywheel/local as root, so that the postgres user can reach it)
#   FLYWHEEL_LOCAL_{KAFKA,KAFKA_CONTROLLER,MINIO,MINIO_CONSOLE,POSTGRES}_PORT
set -euo pipefail

# The servers this starts must not hold the caller's open files: a lock taken around it (`flock LOCK make
# test`, which starts them) would stay held by them until `down`. 255 is the script bash is reading.
for fd_path in /proc/$$/fd/*; do
  fd=${fd_path##*/}
  if ((fd > 2 && fd < 255)); then eval "exec $fd>&-"; fi
done 2>/dev/null || true

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

KAFKA_VERSION=4.1.2
# The Go module proxy serves MinIO's community edition only at the final commit of its archived
# repository (the RELEASE.* tags are not semver, and their pseudo-versions are not served here).
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c

CACHE_DIR="${FLYWHEEL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/flywheel}"
if [[ $(id -u) == 0 ]]; then default_local=/var/lib/flywheel/local; else default_local="${XDG_STATE_HOME:-$HOME/.local/state}/flywheel/local"; fi
LOCAL_DIR="${FLYWHEEL_LOCAL_DIR:-$default_local}"

KAFKA_PORT="${FLYWHEEL_LOCAL_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${FLYWHEEL_LOCAL_KAFKA_CONTROLLER_PORT:-19093}"
MINIO_PORT="${FLYWHEEL_LOCAL_MINIO_PORT:-19000}"
MINIO_CONSOLE_PORT="${FLYWHEEL_LOCAL_MINIO_CONSOLE_PORT:-19001}"
POSTGRES_PORT="${FLYWHEEL_LOCAL_POSTGRES_PORT:-15432}"

MINIO_USER=flywheel
MINIO_PASSWORD=flywheel-secret
PG_USER=flywheel
PG_PASSWORD=flywheel
PG_DB=flywheel

KAFKA_LIBS="$CACHE_DIR/kafka/libs-$KAFKA_VERSION"
MINIO_BIN="$CACHE_DIR/minio/$MINIO_VERSION/minio"

log() { printf '[infra] %s\n' "$*" >&2; }
die() { printf '[infra] error: %s\n' "$*" >&2; exit 1; }

as_root() { if [[ $(id -u) == 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi; }

apt_install() {
  log "installing Debian packages: $*"
  if [[ ! -f "$LOCAL_DIR/.apt-updated" ]]; then as_root apt-get update -qq && mkdir -p "$LOCAL_DIR" && touch "$LOCAL_DIR/.apt-updated"; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A process that exists and is not a zombie (a killed server whose parent never reaped it).
process_alive() { [[ -r "/proc/$1/status" ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
pid_alive() { [[ -f "$1" ]] && process_alive "$(cat "$1")"; }

wait_for() { # wait_for NAME SECONDS COMMAND...
  local name=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$name did not answer within ${seconds}s (logs: $LOCAL_DIR/$name/)"
    sleep 0.5
  done
}

# ---------------------------------------------------------------- Kafka
install_kafka() {
  [[ -f "$KAFKA_LIBS/.complete" ]] && return
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install maven
  log "resolving Kafka $KAFKA_VERSION from Maven Central into $KAFKA_LIBS"
  rm -rf "$KAFKA_LIBS.tmp"
  mkdir -p "$CACHE_DIR/kafka"
  mvn -B -Dstyle.color=never -f "$HERE/kafka-pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS.tmp" \
    >"$CACHE_DIR/kafka/maven.log" 2>&1 || die "maven could not resolve Kafka: $(tail -n20 "$CACHE_DIR/kafka/maven.log")"
  rm -rf "$KAFKA_LIBS" && mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS" && touch "$KAFKA_LIBS/.complete"
}

# The JVM command line that runs a Kafka main class from the cached jars.
kafka_java() {
  KAFKA_JAVA=(java -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true
    -Dkafka.logs.dir="$LOCAL_DIR/kafka" -Dlog4j2.configurationFile="$HERE/log4j2.properties"
    -cp "$KAFKA_LIBS/*")
}

start_kafka() {
  local dir="$LOCAL_DIR/kafka"
  pid_alive "$dir/pid" && { log "kafka already running"; return; }
  mkdir -p "$dir"
  kafka_java
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=3
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    local cluster_id
    cluster_id=$("${KAFKA_JAVA[@]}" kafka.tools.StorageTool random-uuid | tail -n1)
    log "formatting Kafka storage (cluster $cluster_id)"
    "${KAFKA_JAVA[@]}" kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$dir/server.properties" >"$dir/format.log" 2>&1 \
      || die "kafka storage format failed: $(tail -n5 "$dir/format.log")"
  fi
  : >"$dir/server.log"
  # Every partition keeps its segment files open: a broker with thousands of partitions (test runs make
  # many) needs far more descriptors than the usual default of 1024.
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  # setsid: the server outlives the shell that started it, until `down`.
  setsid "${KAFKA_JAVA[@]}" kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  log "kafka starting (pid $!)"
}

kafka_ready() { port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$LOCAL_DIR/kafka/server.log"; }

# ---------------------------------------------------------------- MinIO
install_minio() {
  [[ -x "$MINIO_BIN" ]] && return
  command -v go >/dev/null || die "Go >= 1.24 is needed to build MinIO (go install github.com/minio/minio@$MINIO_VERSION)"
  log "building MinIO $MINIO_VERSION from source with go install (several minutes the first time)"
  GOBIN="$(dirname "$MINIO_BIN")" GOTOOLCHAIN=auto GOFLAGS=-buildvcs=false \
    go install "github.com/minio/minio@$MINIO_VERSION"
}

start_minio() {
  local dir="$LOCAL_DIR/minio"
  pid_alive "$dir/pid" && { log "minio already running"; return; }
  mkdir -p "$dir/data"
  MINIO_ROOT_USER="$MINIO_USER" MINIO_ROOT_PASSWORD="$MINIO_PASSWORD" MINIO_BROWSER=off \
    MINIO_UPDATE=off MINIO_CALLHOME_ENABLE=off \
    setsid "$MINIO_BIN" server --quiet --address "127.0.0.1:$MINIO_PORT" \
    --console-address "127.0.0.1:$MINIO_CONSOLE_PORT" "$dir/data" >"$dir/server.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  log "minio starting (pid $!)"
}

minio_ready() { curl -fsS "http://127.0.0.1:$MINIO_PORT/minio/health/ready"; }

# ---------------------------------------------------------------- PostgreSQL
pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }

install_postgres() {
  [[ -n "$(pg_bindir)" && -x "$(pg_bindir)/initdb" ]] && return
  apt_install postgresql
  [[ -n "$(pg_bindir)" ]] || die "PostgreSQL installed but no /usr/lib/postgresql/*/bin found"
}

as_pg_owner() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

start_postgres() {
  local dir="$LOCAL_DIR/postgres" bin
  bin="$(pg_bindir)"
  mkdir -p "$dir"
  [[ $(id -u) == 0 ]] && chown postgres:postgres "$dir"
  if [[ ! -f "$dir/data/PG_VERSION" ]]; then
    log "initialising PostgreSQL in $dir/data"
    local pwfile="$dir/.pwfile"
    echo "$PG_PASSWORD" >"$pwfile"
    [[ $(id -u) == 0 ]] && chown postgres:postgres "$pwfile"
    as_pg_owner "$bin/initdb" -D "$dir/data" -U "$PG_USER" --pwfile="$pwfile" \
      --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || die "initdb failed: $(tail -n5 "$dir/initdb.log")"
    rm -f "$pwfile"
  fi
  # A postmaster.pid left by a killed server would make pg_ctl think it still runs.
  if [[ -f "$dir/data/postmaster.pid" ]] && ! process_alive "$(head -n1 "$dir/data/postmaster.pid")"; then
    rm -f "$dir/data/postmaster.pid"
  fi
  if as_pg_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then log "postgres already running"; return; fi
  as_pg_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
    -o "-h 127.0.0.1 -p $POSTGRES_PORT -k $dir/data -c max_connections=300 -c fsync=off -c synchronous_commit=off" >/dev/null \
    || die "postgres did not start: $(tail -n5 "$dir/server.log")"
  log "postgres started"
}

postgres_ready() { "$(pg_bindir)/pg_isready" -q -h 127.0.0.1 -p "$POSTGRES_PORT"; }

ensure_database() {
  local bin; bin="$(pg_bindir)"
  if ! PGPASSWORD="$PG_PASSWORD" "$bin/psql" -h 127.0.0.1 -p "$POSTGRES_PORT" -U "$PG_USER" -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='$PG_DB'" | grep -q 1; then
    PGPASSWORD="$PG_PASSWORD" "$bin/createdb" -h 127.0.0.1 -p "$POSTGRES_PORT" -U "$PG_USER" "$PG_DB"
  fi
}

# ---------------------------------------------------------------- commands
print_env() {
  cat <<EOF
export FLYWHEEL_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
export FLYWHEEL_DATABASE_URL=postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$POSTGRES_PORT/$PG_DB
export FLYWHEEL_S3_ENDPOINT=http://127.0.0.1:$MINIO_PORT
export FLYWHEEL_S3_ACCESS_KEY=$MINIO_USER
export FLYWHEEL_S3_SECRET_KEY=$MINIO_PASSWORD
EOF
}

cmd_up() {
  local started=$SECONDS
  mkdir -p "$LOCAL_DIR" "$CACHE_DIR"
  command -v curl >/dev/null || apt_install curl
  install_postgres
  install_kafka
  install_minio
  start_postgres
  start_kafka
  start_minio
  wait_for postgres 60 postgres_ready
  ensure_database
  wait_for minio 60 minio_ready
  wait_for kafka 120 kafka_ready
  log "all servers answer ($((SECONDS - started))s)"
  print_env
}

stop_pidfile() { # stop_pidfile NAME
  local pidfile="$LOCAL_DIR/$1/pid"
  if pid_alive "$pidfile"; then
    local pid; pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    log "$1 stopped"
  fi
  rm -f "$pidfile"
}

cmd_down() {
  stop_pidfile kafka
  stop_pidfile minio
  local bin; bin="$(pg_bindir)"
  if [[ -n "$bin" && -f "$LOCAL_DIR/postgres/data/PG_VERSION" ]] \
    && as_pg_owner "$bin/pg_ctl" -D "$LOCAL_DIR/postgres/data" status >/dev/null 2>&1; then
    as_pg_owner "$bin/pg_ctl" -D "$LOCAL_DIR/postgres/data" -m fast -w stop >/dev/null && log "postgres stopped"
  fi
}

cmd_status() {
  local failed=0
  if postgres_ready 2>/dev/null; then echo "postgres: up on 127.0.0.1:$POSTGRES_PORT"; else echo "postgres: down"; failed=1; fi
  if kafka_ready 2>/dev/null; then echo "kafka:    up on 127.0.0.1:$KAFKA_PORT"; else echo "kafka:    down"; failed=1; fi
  if minio_ready 2>/dev/null; then echo "minio:    up on 127.0.0.1:$MINIO_PORT"; else echo "minio:    down"; failed=1; fi
  return $failed
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  env) print_env ;;
  status) cmd_status ;;
  reset) cmd_down; rm -rf "${LOCAL_DIR:?}"/{kafka,minio,postgres}; log "data deleted from $LOCAL_DIR" ;;
  *) echo "usage: $0 up|down|env|status|reset" >&2; exit 2 ;;
esac
