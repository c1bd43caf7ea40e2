-- How serving splits a model's requests between its aliases, and which aliases shadow them
-- (shared.events.TrafficPolicy as JSON). NULL: every request goes to serving's default alias.
ALTER TABLE registered_models ADD COLUMN traffic_policy jsonb;
