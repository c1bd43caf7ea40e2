-- Alert subscribers: webhooks following the monitor's alerts and retrain requests and the registry's new
-- and promoted versions, and the delivery log: one delivery per subscription and event, every attempt kept.

CREATE TABLE subscriptions (
    id text PRIMARY KEY DEFAULT replace(gen_random_uuid()::text, '-', ''),
    url text NOT NULL,
    secret text NOT NULL,  -- signs every delivery (HMAC-SHA256); the API never shows it after creation
    event_types text[] NOT NULL CHECK (cardinality(event_types) > 0),
    model text,  -- NULL: every model
    min_severity text NOT NULL DEFAULT 'info' CHECK (min_severity IN ('info', 'warning', 'critical')),
    description text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_by_created ON subscriptions (created_at DESC, id);

CREATE TABLE deliveries (
    id text PRIMARY KEY DEFAULT replace(gen_random_uuid()::text, '-', ''),
    subscription_id text NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    event_id text NOT NULL,
    event_type text NOT NULL,
    body bytea NOT NULL,  -- the CloudEvent as sent and signed: the same bytes on every attempt
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    last_status_code integer,
    last_error text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),  -- while an attempt runs: when its claim expires
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);
-- An event that arrives twice (Kafka delivers at least once) is enqueued once per subscription.
CREATE UNIQUE INDEX deliveries_once_per_event ON deliveries (subscription_id, event_id);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_subscription ON deliveries (subscription_id, created_at DESC, id);
CREATE INDEX deliveries_finished ON deliveries (updated_at) WHERE status <> 'pending';

CREATE TABLE delivery_attempts (
    delivery_id text NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    started_at timestamptz NOT NULL,
    duration_ms real NOT NULL,
    status_code integer,
    error text,
    PRIMARY KEY (delivery_id, attempt)
);
