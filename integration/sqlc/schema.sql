-- The clinic's schema as the application sees it: encrypted columns have
-- their plaintext types here, so sqlc generates time.Time for a date and
-- json.RawMessage for jsonb. In the database they are stored as text (see
-- migrations.sql); kmspostgres converts between the two.

CREATE TYPE appointment_status AS ENUM ('scheduled', 'attended', 'cancelled');

CREATE TABLE clinics (
    id   bigserial PRIMARY KEY,
    name text NOT NULL
);

CREATE TABLE patients (
    id                bigserial PRIMARY KEY,
    clinic_id         bigint NOT NULL REFERENCES clinics (id),
    mrn               text NOT NULL UNIQUE,           -- medical record number: plain, searchable
    name              text NOT NULL,                  -- encrypted
    email             text,                           -- encrypted, nullable
    date_of_birth     date NOT NULL,                  -- encrypted
    balance           numeric NOT NULL,               -- encrypted
    allergies         jsonb NOT NULL,                 -- encrypted
    discharged_on     date                            -- encrypted, nullable
);

CREATE TABLE appointments (
    id         bigserial PRIMARY KEY,
    patient_id bigint NOT NULL REFERENCES patients (id),
    starts_at  timestamptz NOT NULL,
    status     appointment_status NOT NULL DEFAULT 'scheduled',
    tags       text[] NOT NULL DEFAULT '{}'
);

CREATE TABLE clinical_notes (
    id                bigserial PRIMARY KEY,
    patient_id        bigint NOT NULL REFERENCES patients (id),
    written_at        timestamptz NOT NULL DEFAULT now(),
    body              text NOT NULL                   -- encrypted
);

-- Not listed here: the key columns (encrypted_kms_key) that the migration
-- adds. The driver manages them and leaves them out of SELECT *, so the
-- models sqlc generates are the same as before encryption.
