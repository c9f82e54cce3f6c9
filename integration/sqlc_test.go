package integration

import (
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/blindindex"
	"github.com/kmspostgres/kmspostgres/integration/sqlc/clinic"
)

// TestSqlcClinic runs the code sqlc generated for database/sql, unchanged,
// on kmspostgres: once through plain queries, once through the prepared
// variant (Prepare(ctx, db)).
func TestSqlcClinic(t *testing.T) {
	migrations, err := os.ReadFile("sqlc/migrations.sql")
	if err != nil {
		t.Fatal(err)
	}
	kmsMap, err := os.ReadFile("sqlc/kms_schema.yaml")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("KMS_KEY_ID", "insecure-test-key")
	// patients.email has a blind index (kms_schema.yaml).
	t.Setenv(blindindex.EnvMasterKey, testMasterKey)
	for _, prepared := range []bool{false, true} {
		name := "queries"
		if prepared {
			name = "prepared"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, string(migrations), string(kmsMap))
			ctx := context.Background()
			var q *clinic.Queries
			if prepared {
				if q, err = clinic.Prepare(ctx, e.db); err != nil {
					t.Fatalf("Prepare: %v", err)
				}
				defer q.Close()
			} else {
				q = clinic.New(e.db)
			}
			clinicSuite(t, e, q)
		})
	}
}

func clinicSuite(t *testing.T, e *env, q *clinic.Queries) {
	ctx := context.Background()
	c, err := q.CreateClinic(ctx, "Northside")
	if err != nil {
		t.Fatal(err)
	}
	dob := time.Date(1990, 4, 1, 0, 0, 0, 0, time.UTC)
	ada, err := q.CreatePatient(ctx, clinic.CreatePatientParams{
		ClinicID: c.ID, Mrn: "MRN-001", Name: "Ada Byron", Email: sql.NullString{String: "ada@example.org", Valid: true},
		DateOfBirth: dob, Balance: "1250.75", Allergies: json.RawMessage(`["penicillin"]`),
	})
	if err != nil {
		t.Fatalf("CreatePatient: %v", err)
	}
	if ada.Name != "Ada Byron" || ada.Email.String != "ada@example.org" || !ada.DateOfBirth.Equal(dob) || ada.Balance != "1250.75" ||
		string(ada.Allergies) != `["penicillin"]` || ada.DischargedOn.Valid || ada.ID == 0 {
		t.Fatalf("RETURNING *: %+v", ada)
	}
	bob, err := q.CreatePatient(ctx, clinic.CreatePatientParams{
		ClinicID: c.ID, Mrn: "MRN-002", Name: "Bob Stone", DateOfBirth: dob.AddDate(5, 0, 0), Balance: "0",
		Allergies: json.RawMessage(`[]`), DischargedOn: sql.NullTime{Time: time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC), Valid: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.assertNoPlaintext("patients", "Ada Byron", "ada@example.org", "1250.75", "penicillin", "1990-04-01", "Bob Stone")

	// :one by primary key and by a plain column.
	got, err := q.GetPatient(ctx, bob.ID)
	if err != nil || got.Name != "Bob Stone" || got.Email.Valid || !got.DischargedOn.Valid || got.DischargedOn.Time.Day() != 2 {
		t.Fatalf("GetPatient: %+v %v", got, err)
	}
	byMRN, err := q.GetPatientByMRN(ctx, "MRN-001")
	if err != nil || byMRN.Name != "Ada Byron" {
		t.Fatalf("GetPatientByMRN: %+v %v", byMRN, err)
	}
	// :many with LIMIT/OFFSET ordered by a plain column, and = ANY($1::bigint[]).
	page, err := q.ListPatientsByClinic(ctx, clinic.ListPatientsByClinicParams{ClinicID: c.ID, Limit: 1, Offset: 1})
	if err != nil || len(page) != 1 || page[0].Name != "Bob Stone" || page[0].Balance != "0" {
		t.Fatalf("ListPatientsByClinic: %+v %v", page, err)
	}
	byIDs, err := q.ListPatientsByIDs(ctx, []int64{ada.ID, bob.ID})
	if err != nil || len(byIDs) != 2 || byIDs[0].Name != "Ada Byron" {
		t.Fatalf("ListPatientsByIDs: %+v %v", byIDs, err)
	}
	// :exec UPDATE … WHERE id = $1, with sqlc.arg / sqlc.narg.
	if err := q.UpdatePatientEmail(ctx, clinic.UpdatePatientEmailParams{ID: bob.ID, Email: sql.NullString{String: "bob@example.org", Valid: true}}); err != nil {
		t.Fatal(err)
	}
	if err := q.UpdatePatientContact(ctx, clinic.UpdatePatientContactParams{ID: ada.ID, Email: sql.NullString{String: "ada@new.example.org", Valid: true}}); err != nil {
		t.Fatal(err)
	}
	// :execrows set-based UPDATE, each row under its own key.
	n, err := q.SetClinicAllergies(ctx, clinic.SetClinicAllergiesParams{ClinicID: c.ID, Allergies: json.RawMessage(`["latex"]`)})
	if err != nil || n != 2 {
		t.Fatalf("SetClinicAllergies: %d %v", n, err)
	}
	for _, id := range []int64{ada.ID, bob.ID} {
		p, err := q.GetPatient(ctx, id)
		if err != nil || string(p.Allergies) != `["latex"]` {
			t.Fatalf("after set-based update: %+v %v", p, err)
		}
	}
	if p, _ := q.GetPatient(ctx, ada.ID); p.Email.String != "ada@new.example.org" || p.DischargedOn.Valid {
		t.Fatalf("narg update: %+v", p)
	}
	// ON CONFLICT upserts: an encrypted table on its primary key, a plain table.
	if err := q.UpsertPatient(ctx, clinic.UpsertPatientParams{ID: bob.ID, ClinicID: c.ID, Mrn: "MRN-002", Name: "Robert Stone",
		DateOfBirth: dob, Balance: "10.00", Allergies: json.RawMessage(`{}`)}); err != nil {
		t.Fatalf("UpsertPatient: %v", err)
	}
	if p, _ := q.GetPatient(ctx, bob.ID); p.Name != "Robert Stone" || p.Email.Valid || p.Balance != "10.00" {
		t.Fatalf("after upsert: %+v", p)
	}
	if err := q.TouchClinic(ctx, clinic.TouchClinicParams{ID: c.ID, Name: "Northside Clinic"}); err != nil {
		t.Fatal(err)
	}
	// Joins: an encrypted and a plain table (enum and array columns), and two encrypted tables.
	starts := time.Date(2025, 3, 1, 9, 30, 0, 0, time.UTC)
	if _, err := q.CreateAppointment(ctx, clinic.CreateAppointmentParams{PatientID: ada.ID, StartsAt: starts, Status: clinic.AppointmentStatusScheduled, Tags: []string{"follow-up", "cardio"}}); err != nil {
		t.Fatal(err)
	}
	appts, err := q.ListAppointmentsWithPatients(ctx, clinic.ListAppointmentsWithPatientsParams{ClinicID: c.ID, Status: clinic.AppointmentStatusScheduled})
	if err != nil || len(appts) != 1 || appts[0].PatientName != "Ada Byron" || appts[0].PatientEmail.String != "ada@new.example.org" ||
		strings.Join(appts[0].Tags, ",") != "follow-up,cardio" || !appts[0].StartsAt.Equal(starts) {
		t.Fatalf("ListAppointmentsWithPatients: %+v %v", appts, err)
	}
	note, err := q.CreateNote(ctx, clinic.CreateNoteParams{PatientID: ada.ID, Body: "BP 120/80, stable"})
	if err != nil || note.ID == 0 {
		t.Fatalf("CreateNote: %+v %v", note, err)
	}
	notes, err := q.ListNotesWithPatients(ctx, c.ID)
	if err != nil || len(notes) != 1 || notes[0].Body != "BP 120/80, stable" || notes[0].Name != "Ada Byron" || !notes[0].DateOfBirth.Equal(dob) {
		t.Fatalf("ListNotesWithPatients: %+v %v", notes, err)
	}
	e.assertNoPlaintext("clinical_notes", "BP 120/80")
	if n, err := q.CountPatientsWithoutEmail(ctx, c.ID); err != nil || n != 1 {
		t.Fatalf("CountPatientsWithoutEmail: %d %v", n, err)
	}
	// WithTx: rolled back, then committed.
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.WithTx(tx).UpdatePatientEmail(ctx, clinic.UpdatePatientEmailParams{ID: ada.ID, Email: sql.NullString{String: "tx@example.org", Valid: true}}); err != nil {
		t.Fatal(err)
	}
	if p, err := q.WithTx(tx).GetPatient(ctx, ada.ID); err != nil || p.Email.String != "tx@example.org" {
		t.Fatalf("read own write: %+v %v", p, err)
	}
	tx.Rollback()
	if p, _ := q.GetPatient(ctx, ada.ID); p.Email.String != "ada@new.example.org" {
		t.Fatalf("after rollback: %+v", p)
	}
	// :one DELETE … RETURNING decrypts the deleted row.
	if _, err := e.db.ExecContext(ctx, "DELETE FROM clinical_notes"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.ExecContext(ctx, "DELETE FROM appointments"); err != nil {
		t.Fatal(err)
	}
	del, err := q.DeletePatient(ctx, bob.ID)
	if err != nil || del.Name != "Robert Stone" {
		t.Fatalf("DeletePatient: %+v %v", del, err)
	}
	// What the app leaves out after reading the refusal: filtering or
	// sorting on an encrypted column.
	for _, sqlText := range []string{
		"SELECT id FROM patients WHERE name = $1",
		"SELECT id, name FROM patients ORDER BY name",
		"SELECT id FROM patients WHERE date_of_birth > $1",
	} {
		_, err := e.db.QueryContext(ctx, sqlText, "x")
		var re *kmspostgres.RefusalError
		if !strings.Contains(sqlText, "$1") {
			_, err = e.db.QueryContext(ctx, sqlText)
		}
		if !errorsAs(err, &re) || re.Table != "patients" {
			t.Fatalf("%s: %v", sqlText, err)
		}
	}
}

// TestSqlcGenerateIsCurrent regenerates the code with the real sqlc and
// checks that nothing changes (scripts/test.sh installs sqlc).
func TestSqlcGenerateIsCurrent(t *testing.T) {
	sqlc := tool(t, "sqlc")
	dir := t.TempDir()
	for _, f := range []string{"sqlc.yaml", "schema.sql", "query.sql"} {
		b, err := os.ReadFile(filepath.Join("sqlc", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(sqlc, "generate")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sqlc generate: %v\n%s", err, out)
	}
	for _, f := range []string{"db.go", "models.go", "query.sql.go"} {
		want, err := os.ReadFile(filepath.Join("sqlc", "clinic", f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, "clinic", f))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("clinic/%s is out of date: run sqlc generate in integration/sqlc", f)
		}
	}
}
