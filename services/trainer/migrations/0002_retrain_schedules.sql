-- Per-model retraining schedules: a cron expression, fired once per due time by whichever replica
-- locks the row first.

CREATE TABLE retrain_schedules (
    model_name text PRIMARY KEY,
    cron text NOT NULL,
    dataset_uri text,
    next_run_at timestamptz NOT NULL,
    last_run_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX retrain_schedules_due ON retrain_schedules (next_run_at);
