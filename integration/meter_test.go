package integration

import (
	"context"
	"sync/atomic"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/providers/testkey"
)

// concurrencyMeter records how many unwraps run at once.
type concurrencyMeter struct {
	*testkey.Provider
	cur, max atomic.Int64
}

func (m *concurrencyMeter) Unwrap(ctx context.Context, keyID string, w []byte, c envelope.Context) ([]byte, error) {
	n := m.cur.Add(1)
	for {
		old := m.max.Load()
		if n <= old || m.max.CompareAndSwap(old, n) {
			break
		}
	}
	defer m.cur.Add(-1)
	return m.Provider.Unwrap(ctx, keyID, w, c)
}
