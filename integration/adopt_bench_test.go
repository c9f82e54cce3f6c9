package integration

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/providers/awskms"
)

// TestAdoptThroughput measures Encrypt on KMSPG_ADOPT_ROWS legacy rows
// with the test key, against two plain batched UPDATEs of the same rows
// on the same database, each on a fresh, vacuumed copy of the table:
// "server" updates each range of 500 ids in one statement, with no data
// leaving the server; "client" reads each batch of 500 and writes it back
// with one UPDATE … FROM unnest, the shape Encrypt has without the
// crypto. Without KMSPG_ADOPT_ROWS it runs on 2,000 rows.
func TestAdoptThroughput(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("KMSPG_ADOPT_ROWS"))
	if n <= 0 {
		n = 2000 // a quick run in the suite; set KMSPG_ADOPT_ROWS to measure
	}
	const batch = 500
	e := newEnv(t, "", `
key_id: insecure-test-key
tables:
  members:
    migrating: true
    columns:
      email: {}
      dob: {type: date}
      visits: {type: integer}
`)
	ctx := context.Background()
	fresh := func(name string) {
		t.Helper()
		e.rawExec("DROP TABLE IF EXISTS " + name)
		e.rawExec(fmt.Sprintf(`CREATE TABLE %s AS SELECT i::bigint AS id, 'name ' || i AS name, 'member' || i || '@example.com' AS email,
			(date '1950-01-01' + i %% 20000)::text AS dob, (i %% 1000)::text AS visits, NULL::text AS encrypted_kms_key
			FROM generate_series(1, %d) i`, name, n))
		e.rawExec("ALTER TABLE " + name + " ADD PRIMARY KEY (id)")
		e.rawExec("VACUUM ANALYZE " + name)
	}
	timed := func(what string, f func()) float64 {
		t.Helper()
		start := time.Now()
		f()
		d := time.Since(start)
		rps := float64(n) / d.Seconds()
		t.Logf("%-40s %d rows in %7.2fs: %8.0f rows/s", what, n, d.Seconds(), rps)
		return rps
	}

	fresh("members")
	server := timed("plain UPDATE, server-side batches", func() {
		for lo := 0; lo < n; lo += batch {
			if _, err := e.raw.Exec(ctx, "UPDATE members SET email = upper(email), dob = dob || '', visits = visits || '', encrypted_kms_key = 'x' WHERE id > $1 AND id <= $2", lo, lo+batch); err != nil {
				t.Fatal(err)
			}
		}
	})

	// readWrite is the plain batched UPDATE that reads each batch and
	// writes it back; with sized, each value is as long as the base64
	// cell Encrypt writes for it, and the key column as long as a wrapped
	// test key, to tell the cost of the bytes from the cost of the crypto.
	readWrite := func(sized bool) {
		t.Helper()
		pad := func(s string, plain int) string {
			if !sized {
				return s + "!"
			}
			return s + strings.Repeat("x", 4*((plain+28+2)/3)-len(s))
		}
		key := "x"
		if sized {
			key = "v1:" + strings.Repeat("k", 80)
		}
		last := int64(0)
		for {
			rows, err := e.raw.Query(ctx, "SELECT id::text AS pk, email, dob, visits FROM members WHERE encrypted_kms_key IS NULL AND id > $1 ORDER BY id LIMIT "+strconv.Itoa(batch), last)
			if err != nil {
				t.Fatal(err)
			}
			var ids, emails, dobs, visits, keys []string
			for rows.Next() {
				var id, em, d, v string
				if err := rows.Scan(&id, &em, &d, &v); err != nil {
					t.Fatal(err)
				}
				ids, emails, dobs, visits = append(ids, id), append(emails, pad(em, len(em))), append(dobs, pad(d, 4)), append(visits, pad(v, 8))
				keys = append(keys, key)
			}
			if len(ids) == 0 {
				break
			}
			last, _ = strconv.ParseInt(ids[len(ids)-1], 10, 64)
			if _, err := e.raw.Exec(ctx, `UPDATE members AS t SET email = v.e, dob = v.d, visits = v.v, encrypted_kms_key = v.k
				FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS v(id, e, d, v, k) WHERE t.id = v.id::bigint AND t.encrypted_kms_key IS NULL`,
				ids, emails, dobs, visits, keys); err != nil {
				t.Fatal(err)
			}
		}
	}
	fresh("members")
	client := timed("plain UPDATE, read + write batches", func() { readWrite(false) })
	fresh("members")
	sized := timed("the same, values of the cells' size", func() { readWrite(true) })

	fresh("members")
	c := e.connector(kmspostgres.WithProvider(e.kms))
	var st kmspostgres.BackfillStats
	enc := timed("kmspostgres Encrypt, test key", func() {
		var err error
		st, err = c.Encrypt(ctx, "members", kmspostgres.BackfillOptions{BatchSize: batch})
		if err != nil || st.Done != int64(n) {
			t.Fatalf("%+v %v", st, err)
		}
	})
	t.Logf("Encrypt: %.2f× the server-side UPDATE, %.2f× the read + write UPDATE, %.2f× it with values of the cells' size; %.2f KMS calls per row", enc/server, enc/client, enc/sized, float64(st.KMSCalls)/float64(n))

	var plain int
	if err := e.raw.QueryRow(ctx, "SELECT count(*) FROM members WHERE encrypted_kms_key IS NULL OR email LIKE '%@%'").Scan(&plain); err != nil || plain != 0 {
		t.Fatalf("%d rows left in plaintext (%v)", plain, err)
	}
}

// TestAdoptThroughputAWS measures Encrypt and Decrypt on
// KMSPG_ADOPT_KMS_ROWS legacy rows against local-kms (the AWS KMS API) on
// loopback. Without KMSPG_ADOPT_KMS_ROWS it runs on 200 rows.
func TestAdoptThroughputAWS(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("KMSPG_ADOPT_KMS_ROWS"))
	if n <= 0 {
		n = 200 // a quick run in the suite; set KMSPG_ADOPT_KMS_ROWS to measure
	}
	l := startLocalKMS(t)
	awsEnv(t, l.url())
	p, err := awskms.New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, fmt.Sprintf(`CREATE TABLE members AS SELECT i::bigint AS id, 'member' || i || '@example.com' AS email,
			(date '1950-01-01' + i %% 20000)::text AS dob, NULL::text AS encrypted_kms_key FROM generate_series(1, %d) i;
		ALTER TABLE members ADD PRIMARY KEY (id);`, n), `
key_id: alias/kmspg
tables:
  members:
    migrating: true
    columns:
      email: {}
      dob: {type: date}
`)
	c := e.connector(kmspostgres.WithProvider(p))
	for _, run := range []struct {
		name string
		f    func(context.Context, string, kmspostgres.BackfillOptions) (kmspostgres.BackfillStats, error)
	}{{"Encrypt", c.Encrypt}, {"Decrypt", c.Decrypt}} {
		st, err := run.f(context.Background(), "members", kmspostgres.BackfillOptions{})
		if err != nil || st.Done != int64(n) {
			t.Fatalf("%s: %+v %v", run.name, st, err)
		}
		t.Logf("%s, local-kms: %d rows in %.2fs: %.0f rows/s, %.2f KMS calls per row", run.name, n, st.Elapsed.Seconds(), float64(n)/st.Elapsed.Seconds(), float64(st.KMSCalls)/float64(n))
	}
}
