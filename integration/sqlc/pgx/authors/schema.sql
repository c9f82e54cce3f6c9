-- sqlc's authors example as the application sees it: name and bio are
-- encrypted (see kms_schema.yaml) but keep their plaintext type here, so
-- sqlc generates string and pgtype.Text for them. In the database they are
-- stored as bytea (see migrations.sql); kmspostgres converts between the two.

CREATE TABLE authors (
    id   bigserial PRIMARY KEY,
    name text NOT NULL,   -- encrypted
    bio  text             -- encrypted, nullable
);

-- Not listed here: the key column (encrypted_kms_key) that the migration
-- adds. The driver manages it and leaves it out of SELECT * and RETURNING *,
-- so the Author model is the same as before encryption.
--
-- The queries (query.sql) filter and sort on the primary key only: the
-- driver refuses to compare or sort on an encrypted column.
