-- The model registry (levibot.ml.registry_pg): every process that serves, trains or activates
-- models reads the same rows. `ml_models` holds one card per model, `ml_model_files` its files
-- (the artifacts live in the database), `ml_active` an append-only stack of activations whose
-- top row is the active model; a rollback deletes the top row.
-- IF NOT EXISTS: before this migration the registry created these tables itself, so a
-- database that already has them keeps them and their rows.

CREATE TABLE IF NOT EXISTS ml_models (
    model_id    text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    schema_hash text NOT NULL,
    card        jsonb NOT NULL
);

CREATE TABLE IF NOT EXISTS ml_model_files (
    model_id text NOT NULL REFERENCES ml_models ON DELETE CASCADE,
    name     text NOT NULL,
    data     bytea NOT NULL,
    PRIMARY KEY (model_id, name)
);

CREATE TABLE IF NOT EXISTS ml_active (
    seq          bigserial PRIMARY KEY,
    model_id     text NOT NULL REFERENCES ml_models,
    activated_at timestamptz NOT NULL DEFAULT now()
);
