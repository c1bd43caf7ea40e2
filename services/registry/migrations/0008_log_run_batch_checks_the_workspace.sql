-- A log-batch checks the run's workspace in the same statement that locks the run (a run of another
-- workspace reads as missing, FW404), instead of in a query of its own before it: one round trip a batch.
DROP FUNCTION log_run_batch(text, text[], text[], text[], float8[], int8[], timestamptz[], jsonb);

CREATE FUNCTION log_run_batch(
    target_run text,
    target_workspace text,  -- NULL: a run in any workspace
    param_keys text[], param_values text[],
    point_keys text[], point_values float8[], point_steps int8[], point_times timestamptz[],
    new_tags jsonb
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    conflict record;
BEGIN
    PERFORM 1 FROM runs r JOIN experiments e ON e.id = r.experiment_id
    WHERE r.id = target_run AND (target_workspace IS NULL OR e.workspace = target_workspace)
    FOR UPDATE OF r;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'FW404', MESSAGE = format('no run with id %L', target_run);
    END IF;

    SELECT p.key, p.value AS stored, o.value AS offered INTO conflict
    FROM unnest(param_keys, param_values) AS o(key, value)
    JOIN params p ON p.run_id = target_run AND p.key = o.key
    WHERE p.value <> o.value
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'FW409', MESSAGE = format(
            'param %L of run %s is %L already; params are immutable (offered %L)',
            conflict.key, target_run, conflict.stored, conflict.offered);
    END IF;

    INSERT INTO params (run_id, key, value)
    SELECT target_run, key, value FROM unnest(param_keys, param_values) AS o(key, value)
    ON CONFLICT (run_id, key) DO NOTHING;

    INSERT INTO metrics (run_id, key, value, step, timestamp)
    SELECT target_run, key, value, step, timestamp
    FROM unnest(point_keys, point_values, point_steps, point_times) AS o(key, value, step, timestamp);

    INSERT INTO latest_metrics (run_id, key, value, step, timestamp)
    SELECT DISTINCT ON (key) target_run, key, value, step, timestamp
    FROM unnest(point_keys, point_values, point_steps, point_times) AS o(key, value, step, timestamp)
    ORDER BY key, step DESC, timestamp DESC
    ON CONFLICT (run_id, key) DO UPDATE
        SET value = excluded.value, step = excluded.step, timestamp = excluded.timestamp
        WHERE (excluded.step, excluded.timestamp) >= (latest_metrics.step, latest_metrics.timestamp);

    IF cardinality(param_keys) > 0 OR cardinality(point_keys) > 0 OR new_tags <> '{}'::jsonb THEN
        UPDATE runs SET
            params = runs.params || jsonb_object(param_keys, param_values),
            metrics = coalesce(
                (SELECT jsonb_object_agg(m.key, m.value) FROM latest_metrics m WHERE m.run_id = target_run),
                '{}'),
            tags = runs.tags || new_tags
        WHERE id = target_run;
    END IF;
END;
$$;
