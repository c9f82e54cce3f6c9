-- The same schema as it is stored: the encrypted columns are bytea (raw
-- cells), with no defaults, plus one key column.
CREATE TABLE authors (
    id bigserial PRIMARY KEY,
    name bytea NOT NULL,
    bio bytea,
    encrypted_kms_key text
);
