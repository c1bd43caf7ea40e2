-- Access control: a subscription belongs to the workspace of the token that made it, is seen only from
-- there, and hears only of that workspace's models. Subscriptions from before are in `default`.
ALTER TABLE subscriptions ADD COLUMN workspace text NOT NULL DEFAULT 'default';
CREATE INDEX subscriptions_by_workspace ON subscriptions (workspace, created_at DESC, id);
