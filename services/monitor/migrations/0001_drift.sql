-- The monitor's drift history: each model's policy, every closed window's report, drift episodes (one
-- alert each), retrain requests, and the outbox of the events it emits.

CREATE TABLE policies (
    model text PRIMARY KEY,
    policy jsonb NOT NULL,  -- services.monitor.policy.MonitorPolicy
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE window_reports (
    id bigserial PRIMARY KEY,
    model text NOT NULL,
    version integer NOT NULL,
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL,
    rows integer NOT NULL,
    dataset_drift boolean NOT NULL,
    drift_share real NOT NULL,
    quality_issues boolean NOT NULL,
    report jsonb NOT NULL,  -- services.monitor.drift.WindowReport
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX window_reports_by_model ON window_reports (model, version, window_end DESC);

-- An episode opens at a drifting window (and alerts once), stays open while windows drift, and closes
-- after enough clean windows in a row.
CREATE TABLE episodes (
    id bigserial PRIMARY KEY,
    model text NOT NULL,
    version integer NOT NULL,
    kind text NOT NULL CHECK (kind IN ('data', 'performance')),
    severity text NOT NULL,
    opened_at timestamptz NOT NULL,
    closed_at timestamptz,
    clean_windows integer NOT NULL DEFAULT 0,
    windows integer NOT NULL DEFAULT 1,
    alert_event_id text NOT NULL,
    alert jsonb NOT NULL,  -- the drift-detected payload
    retrain_event_id text
);
CREATE UNIQUE INDEX one_open_episode ON episodes (model, version, kind) WHERE closed_at IS NULL;
CREATE INDEX episodes_by_model ON episodes (model, id DESC);

CREATE TABLE retrain_requests (
    event_id text PRIMARY KEY,
    model text NOT NULL,
    episode_id bigint REFERENCES episodes (id),
    reason text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX retrain_requests_by_model ON retrain_requests (model, requested_at DESC);

CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    key text,
    event jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
