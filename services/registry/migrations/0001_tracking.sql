-- Experiment tracking: experiments, runs, their params, metric histories and artifacts.

CREATE TABLE experiments (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    description text NOT NULL DEFAULT '',
    tags jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE runs (
    id text PRIMARY KEY,
    experiment_id text NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    name text NOT NULL,
    status text NOT NULL CHECK (status IN ('running', 'finished', 'failed', 'killed')),
    start_time timestamptz NOT NULL,
    end_time timestamptz,
    tags jsonb NOT NULL DEFAULT '{}',
    dataset_fingerprint text,
    code_version text
);
CREATE INDEX runs_by_experiment ON runs (experiment_id, start_time DESC);
CREATE INDEX runs_by_start ON runs (start_time DESC, id);
CREATE INDEX runs_tags ON runs USING gin (tags jsonb_path_ops);

-- Immutable once logged: the primary key makes a second, different value a conflict.
CREATE TABLE params (
    run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX params_by_key_value ON params (key, value);

-- Every logged point; histories are read per run and key.
CREATE TABLE metrics (
    run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key text NOT NULL,
    value double precision NOT NULL,
    step bigint NOT NULL,
    timestamp timestamptz NOT NULL
);
CREATE INDEX metrics_history ON metrics (run_id, key, step, timestamp);

-- The last point per run and key (highest step, then latest timestamp): what search and compare read.
CREATE TABLE latest_metrics (
    run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key text NOT NULL,
    value double precision NOT NULL,
    step bigint NOT NULL,
    timestamp timestamptz NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX latest_metrics_by_key_value ON latest_metrics (key, value);

CREATE TABLE run_artifacts (
    run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    path text NOT NULL,
    uri text NOT NULL,
    size bigint NOT NULL,
    sha256 text NOT NULL,
    content_type text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, path)
);
