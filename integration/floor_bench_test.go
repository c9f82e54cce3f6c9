package integration

import (
	"context"
	"runtime"
	"sync"
	"testing"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/providers/testkey"
)

// stored is one row of the encrypted table as stored.
type stored struct{ key, pk, email, phone string }

// BenchmarkSelect1000Floor is the physical floor of BenchmarkSelect1000's
// kms side, in two parts that add up: ciphertext reads, through pgx's
// stdlib, the same stored bytes the driver reads (the encrypted table's
// columns, key column and primary key as text) without decrypting them;
// crypto does, with no database, the work every row needs whatever the
// code around it: parse the key column, unwrap it with the test key under
// its context, set up the cell key, decode and open the two cells, on as
// many goroutines as there are cores. floor = ciphertext + crypto; with
// a warm data-key cache (BenchmarkSelect1000Cached), ciphertext +
// crypto-cached, where the cell key is looked up instead of unwrapped.
func BenchmarkSelect1000Floor(b *testing.B) {
	d := newBench(b, 1000)
	const q = "SELECT id, name, email, phone, encrypted_kms_key, id::text FROM people"
	read := func(b *testing.B) []stored {
		r, err := d.raw.Query(q)
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		var rows []stored
		for r.Next() {
			var id int64
			var name string
			var s stored
			if err := r.Scan(&id, &name, &s.email, &s.phone, &s.key, &s.pk); err != nil {
				b.Fatal(err)
			}
			rows = append(rows, s)
		}
		if err := r.Err(); err != nil || len(rows) != 1000 {
			b.Fatalf("%d rows, %v", len(rows), err)
		}
		return rows
	}
	rows := read(b)
	b.Run("ciphertext", func(b *testing.B) {
		for b.Loop() {
			read(b)
		}
	})
	kms := testkey.New()
	ctx := context.Background()
	emailAAD, phoneAAD := envelope.CellAAD("people", "email"), envelope.CellAAD("people", "phone")
	cellKey := func(s stored) (*envelope.CellKey, error) {
		wk, err := envelope.ParseWrappedKey(s.key)
		if err != nil {
			return nil, err
		}
		dk, err := kms.Unwrap(ctx, "insecure-test-key", wk.Ciphertext, envelope.Context{"table": "people", "id": s.pk})
		if err != nil {
			return nil, err
		}
		return envelope.NewCellKey(dk)
	}
	// With a warm data-key cache the row's cell key is found, not made:
	// what is left is finding it and opening the cells.
	cached := map[string]*envelope.CellKey{}
	for _, s := range rows {
		ck, err := cellKey(s)
		if err != nil {
			b.Fatal(err)
		}
		cached[s.key] = ck
	}
	crypto := func(b *testing.B, key func(stored) (*envelope.CellKey, error)) {
		open := func(s stored) error {
			ck, err := key(s)
			if err != nil {
				return err
			}
			for _, c := range []struct {
				aad  []byte
				cell string
			}{{emailAAD, s.email}, {phoneAAD, s.phone}} {
				raw, err := envelope.DecodeBase64(c.cell)
				if err != nil {
					return err
				}
				if _, err := ck.Open(c.aad, raw); err != nil {
					return err
				}
			}
			return nil
		}
		workers := runtime.GOMAXPROCS(0)
		for b.Loop() {
			var wg sync.WaitGroup
			errs := make([]error, workers)
			for w := range workers {
				wg.Go(func() {
					for i := w; i < len(rows); i += workers {
						if err := open(rows[i]); err != nil && errs[w] == nil {
							errs[w] = err
						}
					}
				})
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("crypto", func(b *testing.B) { crypto(b, cellKey) })
	b.Run("crypto-cached", func(b *testing.B) {
		crypto(b, func(s stored) (*envelope.CellKey, error) { return cached[s.key], nil })
	})
}
