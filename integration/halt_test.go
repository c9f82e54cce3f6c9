package integration

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kmspostgres/kmspostgres"
)

// fillPeople inserts n rows into people through db.
func fillPeople(t *testing.T, db *sql.DB, n int) {
	t.Helper()
	for i := range n {
		if _, err := db.Exec("INSERT INTO people (name, email, phone) VALUES ($1, $2, $3)", "p", fmt.Sprintf("e%d@x", i), "+1"); err != nil {
			t.Fatal(err)
		}
	}
}

func readEmail(db *sql.DB, id int) error {
	var email string
	return db.QueryRow("SELECT email FROM people WHERE id = $1", id).Scan(&email)
}

// writesWork checks that inserts, and updates that set every column under
// the key, still work.
func writesWork(t *testing.T, db *sql.DB) {
	t.Helper()
	if _, err := db.Exec("INSERT INTO people (name, email, phone) VALUES ('w', 'w@x', '+2')"); err != nil {
		t.Fatalf("insert while halted: %v", err)
	}
	if _, err := db.Exec("UPDATE people SET email = 'u@x', phone = '+3' WHERE id = 1"); err != nil {
		t.Fatalf("update while halted: %v", err)
	}
}

func TestHaltDecryption(t *testing.T) {
	e := newEnv(t, obsDDL, obsMap)
	c, db := e.observed()
	fillPeople(t, db, 600)
	if err := readEmail(db, 1); err != nil {
		t.Fatal(err)
	}

	// Halting stops a result set being read at its next row, although the
	// driver has read ahead and decrypted a window of 256.
	rows, err := db.Query("SELECT id, email FROM people ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if !rows.Next() {
			t.Fatal(rows.Err())
		}
	}
	c.HaltDecryption("incident 42")
	if rows.Next() {
		t.Fatal("a row after the halt")
	}
	mustErrIs(t, rows.Err(), kmspostgres.ErrDecryptHalted)
	rows.Close()

	_, unwraps := e.kms.Calls()
	err = readEmail(db, 2)
	mustErrIs(t, err, kmspostgres.ErrDecryptHalted)
	if _, u := e.kms.Calls(); u != unwraps {
		t.Fatalf("%d KMS unwraps while halted", u-unwraps)
	}
	if reason, halted := c.DecryptionHalted(); !halted || reason != "manual: incident 42" {
		t.Fatalf("DecryptionHalted() = %q, %v", reason, halted)
	}
	// An UPDATE that keeps the row's key needs an unwrap: refused too.
	_, err = db.Exec("UPDATE people SET email = 'x' WHERE id = 3")
	mustErrIs(t, err, kmspostgres.ErrDecryptHalted)
	writesWork(t, db)
	// Plain columns of an encrypted table still read.
	var name string
	if err := db.QueryRow("SELECT name FROM people WHERE id = 1").Scan(&name); err != nil {
		t.Fatalf("plain column while halted: %v", err)
	}

	c.ResumeDecryption()
	if err := readEmail(db, 2); err != nil {
		t.Fatal(err)
	}
	if _, halted := c.DecryptionHalted(); halted {
		t.Fatal("still halted")
	}
}

func TestHaltFile(t *testing.T) {
	e := newEnv(t, obsDDL, obsMap)
	file := filepath.Join(t.TempDir(), "halt")
	c, db := e.observed(kmspostgres.WithHaltFile(file))
	fillPeople(t, db, 3)
	if err := readEmail(db, 1); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// Looked for at most once a second: halted within about a second.
	waitFor(t, 3*time.Second, func() bool { return errors.Is(readEmail(db, 1), kmspostgres.ErrDecryptHalted) })
	writesWork(t, db)
	// The file wins over ResumeDecryption.
	c.ResumeDecryption()
	mustErrIs(t, readEmail(db, 1), kmspostgres.ErrDecryptHalted)
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, func() bool { return readEmail(db, 1) == nil })
}

// waitFor polls cond every 20 ms until it holds, or fails after d.
func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("not within %v", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("after %v", time.Since(start).Round(time.Millisecond))
}

// TestBreakerConcurrent: 16 readers race a limit of 50 rows a minute; at
// most 50 reads succeed, every other fails closed, writes work, and
// ResumeDecryption resets. The breaker admits exactly 50 rows
// (TestBreakerAdmitsExactly), but a read admitted just before another
// tripped the breaker fails at its row too: between 50 - 16 and 50 reads
// succeed.
func TestBreakerConcurrent(t *testing.T) {
	e := newEnv(t, obsDDL, obsMap)
	const limit = 50
	c, db := e.observed(kmspostgres.WithDecryptLimit(kmspostgres.DecryptLimit{Tables: map[string]int{"people": limit}, Per: time.Minute}))
	db.SetMaxOpenConns(16)
	fillPeople(t, db, 100)

	race := func() (ok int64) {
		var okN atomic.Int64
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() {
				for i := range 10 {
					err := readEmail(db, 1+(g*10+i)%100)
					switch {
					case err == nil:
						okN.Add(1)
					case !errors.Is(err, kmspostgres.ErrDecryptHalted):
						t.Errorf("err = %v, want ErrDecryptHalted", err)
					}
				}
			})
		}
		wg.Wait()
		return okN.Load()
	}
	inRange := func(ok int64) bool { return ok <= limit && ok >= limit-16 }
	if ok := race(); !inRange(ok) {
		t.Fatalf("%d reads succeeded, want %d to %d", ok, limit-16, limit)
	}
	reason, halted := c.DecryptionHalted()
	if !halted {
		t.Fatal("not halted")
	}
	t.Log(reason)
	mustErrIs(t, readEmail(db, 1), kmspostgres.ErrDecryptHalted)
	writesWork(t, db)

	c.ResumeDecryption()
	if ok := race(); !inRange(ok) {
		t.Fatalf("after resume: %d reads succeeded, want %d to %d", ok, limit-16, limit)
	}
}

func TestBreakerLimits(t *testing.T) {
	e := newEnv(t, obsDDL, obsMap)

	t.Run("per table", func(t *testing.T) {
		_, db := e.observed(kmspostgres.WithDecryptLimit(kmspostgres.DecryptLimit{Tables: map[string]int{"notes": 5}, Per: time.Minute}))
		fillPeople(t, db, 20)
		for i := range 5 {
			if _, err := db.Exec("INSERT INTO notes (body) VALUES ($1)", fmt.Sprint("note ", i)); err != nil {
				t.Fatal(err)
			}
		}
		// Another table is not limited.
		if n, err := countRows(db, "SELECT email FROM people"); err != nil || n < 20 {
			t.Fatal(n, err)
		}
		if n, err := countRows(db, "SELECT body FROM notes"); err != nil || n != 5 {
			t.Fatal(n, err)
		}
		_, err := countRows(db, "SELECT body FROM notes WHERE id = 1")
		mustErrIs(t, err, kmspostgres.ErrDecryptHalted)
		// Once open, the breaker halts every read.
		_, err = countRows(db, "SELECT email FROM people")
		mustErrIs(t, err, kmspostgres.ErrDecryptHalted)
	})

	t.Run("overall, a window over the limit, cool-down", func(t *testing.T) {
		c, db := e.observed(kmspostgres.WithDecryptLimit(kmspostgres.DecryptLimit{Rows: 10, Per: time.Minute, CoolDown: 300 * time.Millisecond}))
		// One statement of more rows than the limit returns none.
		n, err := countRows(db, "SELECT email FROM people")
		mustErrIs(t, err, kmspostgres.ErrDecryptHalted)
		if n != 0 {
			t.Fatalf("%d rows before the breaker tripped", n)
		}
		if _, halted := c.DecryptionHalted(); !halted {
			t.Fatal("not halted")
		}
		time.Sleep(400 * time.Millisecond)
		if n, err := countRows(db, "SELECT email FROM people LIMIT 10"); err != nil || n != 10 {
			t.Fatalf("after the cool-down: %d rows, %v", n, err)
		}
		_, err = countRows(db, "SELECT email FROM people LIMIT 1")
		mustErrIs(t, err, kmspostgres.ErrDecryptHalted)
	})

	t.Run("unknown table", func(t *testing.T) {
		_, err := kmspostgres.NewConnector(e.dsn(), kmspostgres.WithDecryptLimit(kmspostgres.DecryptLimit{Tables: map[string]int{"peple": 5}, Per: time.Minute}))
		mustErrIs(t, err, kmspostgres.ErrSchema)
	})
}

func countRows(db *sql.DB, q string) (int, error) {
	rows, err := db.Query(q)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
	}
	return n, rows.Err()
}

// TestHaltConcurrent: 16 readers; no read that starts after
// HaltDecryption returned succeeds, and every failure is
// ErrDecryptHalted; after ResumeDecryption they all read again.
func TestHaltConcurrent(t *testing.T) {
	e := newEnv(t, obsDDL, obsMap)
	c, db := e.observed()
	db.SetMaxOpenConns(16)
	fillPeople(t, db, 50)
	// halted is set once HaltDecryption returned, resuming before
	// ResumeDecryption is called.
	var halted, resuming, stop atomic.Bool
	var okBefore, okAfterResume, refused atomic.Int64
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				wasHalted, wasResumed := halted.Load(), resuming.Load()
				err := readEmail(db, 1+(g+i)%50)
				switch {
				case err == nil && wasResumed:
					okAfterResume.Add(1)
				case err == nil && wasHalted && !resuming.Load():
					t.Errorf("a read that started after the halt succeeded")
				case err == nil:
					okBefore.Add(1)
				case errors.Is(err, kmspostgres.ErrDecryptHalted):
					refused.Add(1)
				default:
					t.Errorf("err = %v", err)
				}
			}
		})
	}
	defer func() { stop.Store(true); wg.Wait() }()
	waitFor(t, 10*time.Second, func() bool { return okBefore.Load() >= 32 })
	c.HaltDecryption("test")
	halted.Store(true)
	waitFor(t, 10*time.Second, func() bool { return refused.Load() >= 32 })
	resuming.Store(true)
	c.ResumeDecryption()
	waitFor(t, 10*time.Second, func() bool { return okAfterResume.Load() >= 32 })
	stop.Store(true)
	wg.Wait()
	t.Logf("%d reads before the halt, %d refused, %d after the resume", okBefore.Load(), refused.Load(), okAfterResume.Load())
	if okBefore.Load() == 0 || refused.Load() == 0 || okAfterResume.Load() == 0 {
		t.Fatal("a phase saw no reads")
	}
}
