-- Access control (shared.auth): API tokens, stored only as their sha256, and workspaces. Experiments and
-- registered models belong to a workspace (runs and versions to theirs); what existed before is in
-- `default`. Names stay unique across workspaces, so events and lookups by model name need no workspace.
CREATE TABLE tokens (
    id text PRIMARY KEY,
    hash text NOT NULL UNIQUE,
    user_name text NOT NULL,
    workspace text NOT NULL,
    role text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL,
    revoked_at timestamptz,
    last_used_at timestamptz
);

ALTER TABLE experiments ADD COLUMN workspace text NOT NULL DEFAULT 'default';
CREATE INDEX experiments_by_workspace ON experiments (workspace, created_at DESC);
ALTER TABLE registered_models ADD COLUMN workspace text NOT NULL DEFAULT 'default';
CREATE INDEX registered_models_by_workspace ON registered_models (workspace, name);
-- The model's workspace when the entry was written: the trail stays in its workspace after a deletion.
ALTER TABLE audit_log ADD COLUMN workspace text NOT NULL DEFAULT 'default';
