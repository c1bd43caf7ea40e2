-- Access control: a file job belongs to its model's workspace, and only that workspace sees it. Jobs from
-- before are in `default`.
ALTER TABLE file_jobs ADD COLUMN workspace text NOT NULL DEFAULT 'default';
