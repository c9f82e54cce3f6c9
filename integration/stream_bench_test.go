package integration

import (
	"context"
	"encoding/base64"
	"fmt"
	"runtime"
	"runtime/metrics"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kmspostgres/kmspostgres"
	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/providers/testkey"
)

// loadEncrypted fills people with n rows encrypted as the driver would
// write them (a data key per row, wrapped by the test key under the row's
// context), made in Go and loaded with COPY: a million rows in seconds.
func loadEncrypted(b *testing.B, e *env, n int) {
	b.Helper()
	ctx := context.Background()
	kms := testkey.New()
	emailAAD, phoneAAD := envelope.CellAAD("people", "email"), envelope.CellAAD("people", "phone")
	i := 0
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if i == n {
			return nil, nil
		}
		i++
		id := strconv.Itoa(i)
		dk, err := envelope.NewDataKey()
		if err != nil {
			return nil, err
		}
		w, err := kms.Wrap(ctx, testkey.KeyID, dk, envelope.Context{"table": "people", "id": id})
		if err != nil {
			return nil, err
		}
		ck, err := envelope.NewCellKey(dk)
		if err != nil {
			return nil, err
		}
		email, _ := ck.Seal(emailAAD, []byte("person"+id+"@example.com"))
		phone, _ := ck.Seal(phoneAAD, []byte("+1-555-"+id))
		return []any{int64(i), "p", base64.StdEncoding.EncodeToString(email), base64.StdEncoding.EncodeToString(phone),
			envelope.WrappedKey{Version: 1, Ciphertext: w}.String()}, nil
	})
	if _, err := e.raw.CopyFrom(ctx, pgx.Identifier{"people"}, []string{"id", "name", "email", "phone", "encrypted_kms_key"}, src); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkStreamMemory reads 1,000 and 1,000,000 rows through the driver
// and reports, sampled every 100 rows while reading, the peak live heap
// (runtime/metrics /gc/heap/live:bytes, the heap the last GC kept) and the
// peak heap in use (which also holds garbage not yet collected, so it
// follows the GC's sawtooth): result sets stream in windows, so neither
// may grow with the result. Run it alone: go test -run '^$' -bench
// StreamMemory.
func BenchmarkStreamMemory(b *testing.B) {
	for _, n := range []int{1000, 1000000} {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			e := newEnv(b, benchDDL, benchMap)
			start := time.Now()
			loadEncrypted(b, e, n)
			b.Logf("loaded %d rows in %v", n, time.Since(start))
			db := e.openBare(kmspostgres.WithProvider(testkey.New()))
			defer db.Close()
			var peak, peakLive uint64
			live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
			for b.Loop() {
				runtime.GC()
				rows, err := db.Query("SELECT id, name, email, phone FROM people")
				if err != nil {
					b.Fatal(err)
				}
				var id int64
				var name, email, phone string
				got := 0
				var ms runtime.MemStats
				for rows.Next() {
					if err := rows.Scan(&id, &name, &email, &phone); err != nil {
						b.Fatal(err)
					}
					got++
					if got%100 == 0 {
						runtime.ReadMemStats(&ms)
						peak = max(peak, ms.HeapInuse)
						metrics.Read(live)
						peakLive = max(peakLive, live[0].Value.Uint64())
					}
				}
				if err := rows.Err(); err != nil || got != n {
					b.Fatalf("%d rows, %v", got, err)
				}
				rows.Close()
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-inuse-MiB")
			b.ReportMetric(float64(peakLive)/(1<<20), "peak-live-heap-MiB")
		})
	}
}
