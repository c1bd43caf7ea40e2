-- The model registry: registered models, their numbered versions, aliases, and an audit trail.

CREATE TABLE registered_models (
    name text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    tags jsonb NOT NULL DEFAULT '{}',
    -- The next version number. Taken under this row's lock inside the transaction that inserts the
    -- version, so concurrent creations serialise and a rolled-back one gives its number back (no gaps);
    -- it never decreases, so a deleted version's number is never reused.
    next_version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE model_versions (
    model_name text NOT NULL REFERENCES registered_models (name) ON DELETE CASCADE,
    version integer NOT NULL CHECK (version >= 1),
    status text NOT NULL CHECK (status IN ('ready', 'failed')),
    status_message text,
    description text NOT NULL DEFAULT '',
    tags jsonb NOT NULL DEFAULT '{}',
    artifact_uri text,
    artifact_sha256 text,
    artifact_size bigint,
    signature jsonb,
    reference_profile_uri text,
    source_run_id text,  -- no foreign key: lineage must survive the run's deletion
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_name, version)
);
-- A run registers under a model at most once, however often its run-completed event arrives.
CREATE UNIQUE INDEX model_versions_once_per_run ON model_versions (model_name, source_run_id)
    WHERE source_run_id IS NOT NULL;

CREATE TABLE model_aliases (
    model_name text NOT NULL,
    alias text NOT NULL,
    version integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_name, alias),
    FOREIGN KEY (model_name, version) REFERENCES model_versions (model_name, version) ON DELETE CASCADE
);

-- Who changed what, when, with the state before and after. Kept when the model itself is deleted.
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    model_name text NOT NULL,
    action text NOT NULL,
    actor text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    version integer,
    before jsonb,
    after jsonb
);
CREATE INDEX audit_log_by_model ON audit_log (model_name, id);

-- Events written in the same transaction as the change they announce, published afterwards.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    key text,
    event jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
