-- The gateway's auth state, shared by every replica and kept across restarts (issue 11).

-- API keys: a name, an expiry (refused from then on) and, after a rotation, the successor.
ALTER TABLE api_keys
    ADD COLUMN name        text NOT NULL DEFAULT '',
    ADD COLUMN expires_at  timestamptz,
    ADD COLUMN replaced_by text NOT NULL DEFAULT '';

-- A refresh family: every token pair rotated from one sign-in. Revoking it refuses them all.
CREATE TABLE auth_token_families (
    family     text PRIMARY KEY,
    subject    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Single-use refresh tokens, stored as SHA-256 digests: a dump of this table grants nothing.
CREATE TABLE auth_refresh_tokens (
    digest     text PRIMARY KEY,
    family     text NOT NULL REFERENCES auth_token_families (family) ON DELETE CASCADE,
    subject    text NOT NULL,
    scopes     text[] NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX auth_refresh_tokens_family ON auth_refresh_tokens (family);
CREATE INDEX auth_refresh_tokens_expires ON auth_refresh_tokens (expires_at);
