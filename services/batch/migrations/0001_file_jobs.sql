-- File jobs: a CSV or Parquet object scored chunk by chunk into a predictions file next to it. Each
-- chunk's predictions are stored as a part object before `chunks_done` moves past it, so a job whose
-- service stopped goes on from its last completed chunk.

CREATE TABLE file_jobs (
    id text PRIMARY KEY,
    status text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    stage text NOT NULL DEFAULT 'queued',
    progress real NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    model text NOT NULL,
    model_version integer NOT NULL,
    alias text,
    input_uri text NOT NULL,
    output_uri text NOT NULL,
    format text NOT NULL CHECK (format IN ('csv', 'parquet')),
    features jsonb,
    chunk_rows integer NOT NULL CHECK (chunk_rows > 0),
    chunks_done integer NOT NULL DEFAULT 0,
    rows_total bigint,
    rows_scored bigint NOT NULL DEFAULT 0,
    rows_rejected bigint NOT NULL DEFAULT 0,
    rows_logged bigint NOT NULL DEFAULT 0,
    rejections jsonb NOT NULL DEFAULT '[]',
    error text,
    attempts integer NOT NULL DEFAULT 0,
    resumed_at_row bigint,
    output_sha256 text,
    output_bytes bigint,
    worker text,
    heartbeat_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX file_jobs_by_created ON file_jobs (created_at DESC, id);
CREATE INDEX file_jobs_queued ON file_jobs (created_at, id) WHERE status = 'queued';
CREATE INDEX file_jobs_running ON file_jobs (heartbeat_at) WHERE status = 'running';
-- Two jobs never write the same file at once.
CREATE UNIQUE INDEX file_jobs_one_writer_per_output ON file_jobs (output_uri) WHERE status IN ('queued', 'running');
