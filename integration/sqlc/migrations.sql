-- The same schema as it is stored: encrypted columns are text (base64
-- cells), whatever their plaintext type, with no defaults. patients.email
-- has a blind index (kms_schema.yaml): email_bidx holds a keyed digest of
-- the normalized email, so WHERE email = $1 works. Its index is not UNIQUE:
-- the application's schema lets patients share an email.
CREATE TYPE appointment_status AS ENUM ('scheduled', 'attended', 'cancelled');
CREATE TABLE clinics (id bigserial PRIMARY KEY, name text NOT NULL);
CREATE TABLE patients (
    id bigserial PRIMARY KEY,
    clinic_id bigint NOT NULL REFERENCES clinics (id),
    mrn text NOT NULL UNIQUE,
    name text NOT NULL,
    email text,
    date_of_birth text NOT NULL,
    balance text NOT NULL,
    allergies text NOT NULL,
    discharged_on text,
    encrypted_kms_key text,
    email_bidx text
);
CREATE INDEX patients_email_bidx ON patients (email_bidx);
CREATE TABLE appointments (
    id bigserial PRIMARY KEY,
    patient_id bigint NOT NULL REFERENCES patients (id),
    starts_at timestamptz NOT NULL,
    status appointment_status NOT NULL DEFAULT 'scheduled',
    tags text[] NOT NULL DEFAULT '{}'
);
CREATE TABLE clinical_notes (
    id bigserial PRIMARY KEY,
    patient_id bigint NOT NULL REFERENCES patients (id),
    written_at timestamptz NOT NULL DEFAULT now(),
    body text NOT NULL,
    encrypted_kms_key text
);
