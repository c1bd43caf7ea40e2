-- Access control: a job belongs to the workspace of whoever queued it (a retrain: to its model's); its
-- run, experiment and model version are made in that workspace. Jobs from before are in `default`.
ALTER TABLE jobs ADD COLUMN workspace text NOT NULL DEFAULT 'default';
