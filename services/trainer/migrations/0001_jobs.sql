-- Training jobs and the trainer's outbox.

CREATE TABLE jobs (
    id text PRIMARY KEY,
    model_name text NOT NULL,
    status text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    stage text NOT NULL DEFAULT 'queued',
    progress real NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    reason text NOT NULL,
    request jsonb NOT NULL,
    run_id text,
    error text,
    problems jsonb NOT NULL DEFAULT '[]',
    result jsonb,
    attempts integer NOT NULL DEFAULT 0,
    worker text,
    heartbeat_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX jobs_by_created ON jobs (created_at DESC, id);
-- Retrain requests for a model that already has a job waiting or running join that job.
CREATE INDEX jobs_active_by_model ON jobs (model_name) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_by_run ON jobs (run_id);

CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    key text,
    event jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
