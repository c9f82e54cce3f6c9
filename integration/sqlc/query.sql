-- name: CreateClinic :one
INSERT INTO clinics (name) VALUES ($1) RETURNING *;

-- name: CreatePatient :one
INSERT INTO patients (clinic_id, mrn, name, email, date_of_birth, balance, allergies, discharged_on)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING *;

-- name: GetPatient :one
SELECT * FROM patients WHERE id = $1;

-- name: GetPatientByMRN :one
SELECT id, name, email, date_of_birth FROM patients WHERE mrn = $1;

-- name: ListPatientsByClinic :many
SELECT id, mrn, name, email, balance FROM patients
WHERE clinic_id = $1
ORDER BY mrn
LIMIT $2 OFFSET $3;

-- name: ListPatientsByIDs :many
SELECT id, name FROM patients WHERE id = ANY($1::bigint[]) ORDER BY id;

-- name: GetPatientByEmail :one
SELECT * FROM patients WHERE email = $1;

-- name: ListPatientsByEmails :many
SELECT * FROM patients WHERE email = ANY($1::text[]) ORDER BY id;

-- name: UpdatePatientEmail :exec
UPDATE patients SET email = $2 WHERE id = $1;

-- name: UpdatePatientContact :exec
UPDATE patients
SET email = sqlc.arg(email), discharged_on = sqlc.narg(discharged_on)
WHERE id = sqlc.arg(id);

-- name: SetClinicAllergies :execrows
UPDATE patients SET allergies = $2 WHERE clinic_id = $1;

-- name: DeletePatient :one
DELETE FROM patients WHERE id = $1 RETURNING *;

-- name: UpdatePatientNameByEmail :exec
UPDATE patients SET name = $1 WHERE email = $2;

-- name: DeletePatientByEmail :execrows
DELETE FROM patients WHERE email = $1;

-- name: UpsertPatient :exec
INSERT INTO patients (id, clinic_id, mrn, name, email, date_of_birth, balance, allergies, discharged_on)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name, email = EXCLUDED.email, date_of_birth = EXCLUDED.date_of_birth,
    balance = EXCLUDED.balance, allergies = EXCLUDED.allergies, discharged_on = EXCLUDED.discharged_on;

-- name: TouchClinic :exec
INSERT INTO clinics (id, name) VALUES ($1, $2)
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name;

-- name: CreateAppointment :one
INSERT INTO appointments (patient_id, starts_at, status, tags) VALUES ($1, $2, $3, $4) RETURNING id;

-- name: ListAppointmentsWithPatients :many
SELECT a.id, a.starts_at, a.status, a.tags, p.name AS patient_name, p.email AS patient_email
FROM appointments a
JOIN patients p ON p.id = a.patient_id
WHERE p.clinic_id = $1 AND a.status = $2
ORDER BY a.starts_at;

-- name: CreateNote :one
INSERT INTO clinical_notes (patient_id, body) VALUES ($1, $2) RETURNING id, written_at;

-- name: ListNotesWithPatients :many
SELECT n.id, n.body, p.name, p.date_of_birth
FROM clinical_notes n
JOIN patients p ON p.id = n.patient_id
WHERE p.clinic_id = $1
ORDER BY n.id;

-- name: CountPatientsWithoutEmail :one
SELECT count(*) FROM patients WHERE clinic_id = $1 AND email IS NULL;
