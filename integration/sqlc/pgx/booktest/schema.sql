-- sqlc's booktest example as the application sees it, with more column
-- types. The encrypted columns (see kms_schema.yaml) keep their plaintext
-- types here, so sqlc generates pgtype.Text, pgtype.Date,
-- pgtype.Timestamptz, pgtype.Numeric, pgtype.UUID and pgtype.Int8 for them.
-- In the database they are stored as bytea or text (see migrations.sql);
-- kmspostgres converts between the two.
--
-- Differences from sqlc's example: encrypted columns have no defaults, and
-- there is no index on authors.name or books.title (the database cannot
-- index ciphertext; the driver refuses a mapped table with such an index).
-- The queries (query.sql) filter and sort on plain columns only.

CREATE TABLE authors (
    author_id serial PRIMARY KEY,
    name      text NOT NULL                       -- encrypted
);

CREATE TYPE book_type AS ENUM (
    'FICTION',
    'NONFICTION'
);

CREATE TABLE books (
    book_id     serial PRIMARY KEY,
    author_id   integer NOT NULL REFERENCES authors (author_id),
    isbn        text NOT NULL DEFAULT '' UNIQUE,
    book_type   book_type NOT NULL DEFAULT 'FICTION',
    title       text NOT NULL,                    -- encrypted
    subtitle    text,                             -- encrypted, nullable
    year        integer NOT NULL DEFAULT 2000,
    available   timestamptz NOT NULL DEFAULT now(),
    published   date,                             -- encrypted, nullable
    signed_at   timestamptz,                      -- encrypted, nullable
    price       numeric,                          -- encrypted, nullable
    catalog_id  uuid,                             -- encrypted, nullable
    copies_sold bigint,                           -- encrypted, nullable
    tags        varchar[] NOT NULL DEFAULT '{}'
);

-- Not listed here: the key columns (encrypted_kms_key) that the migration
-- adds. The driver manages them and leaves them out of SELECT * and
-- RETURNING *, so the models sqlc generates are the same as before
-- encryption.
