-- Access control: a retraining schedule belongs to its model's workspace, and only that workspace sees or
-- changes it. Schedules from before are in `default`.
ALTER TABLE retrain_schedules ADD COLUMN workspace text NOT NULL DEFAULT 'default';
