-- Traffic per model version and minute (for the dashboard), and model performance from ground truth.

CREATE TABLE traffic_minutes (
    model text NOT NULL,
    version integer NOT NULL,
    minute timestamptz NOT NULL,
    rows bigint NOT NULL,
    latency_counts bigint[] NOT NULL,     -- per services.monitor.traffic.LATENCY_EDGES_MS
    confidence_counts bigint[] NOT NULL,  -- per services.monitor.traffic.CONFIDENCE_EDGES
    PRIMARY KEY (model, version, minute)
);

CREATE TABLE performance_windows (
    id bigserial PRIMARY KEY,
    model text NOT NULL,
    version integer NOT NULL,
    window_end timestamptz NOT NULL,
    labels integer NOT NULL,
    metric text NOT NULL,
    value double precision NOT NULL,
    baseline double precision NOT NULL,
    dropped boolean NOT NULL
);
CREATE INDEX performance_windows_by_model ON performance_windows (model, version, window_end DESC);

-- Element-wise sum of two histograms (replicas and restarts add to a minute's counts).
CREATE FUNCTION add_counts(a bigint[], b bigint[]) RETURNS bigint[] LANGUAGE sql IMMUTABLE AS $$
    SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i) FROM unnest(a, b) WITH ORDINALITY AS u(x, y, i)
$$;
