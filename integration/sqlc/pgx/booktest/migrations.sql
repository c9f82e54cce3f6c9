-- The same schema as it is stored: encrypted columns are bytea (raw cells)
-- or text (base64 cells), whatever their plaintext type, with no defaults,
-- plus one key column per table.
CREATE TABLE authors (
    author_id serial PRIMARY KEY,
    name text NOT NULL,
    encrypted_kms_key text
);
CREATE TYPE book_type AS ENUM ('FICTION', 'NONFICTION');
CREATE TABLE books (
    book_id serial PRIMARY KEY,
    author_id integer NOT NULL REFERENCES authors (author_id),
    isbn text NOT NULL DEFAULT '' UNIQUE,
    book_type book_type NOT NULL DEFAULT 'FICTION',
    title bytea NOT NULL,
    subtitle text,
    year integer NOT NULL DEFAULT 2000,
    available timestamptz NOT NULL DEFAULT now(),
    published bytea,
    signed_at text,
    price text,
    catalog_id bytea,
    copies_sold bytea,
    tags varchar[] NOT NULL DEFAULT '{}',
    encrypted_kms_key text
);
