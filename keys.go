package kmspostgres

import (
	"context"
	"encoding/base64"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/kmspostgres/kmspostgres/envelope"
)

// rowKey is a data key ready to use for one row, and its key column text.
type rowKey struct {
	wrapped string
	ck      *envelope.CellKey
}

// keyError names the row and key a data-key failure belongs to.
func keyError(ti *tableInfo, k int, pk []string, keyID string, err error) error {
	return &CellError{Table: ti.table.Name, PK: pkLabel(ti.table, pk), Key: ti.table.Keys[k].Name, KeyID: keyID, Err: err}
}

// mint makes a fresh data key for a row and wraps it under the key's
// current version.
func (c *Conn) mint(ctx context.Context, ti *tableInfo, k int, pk []string) (rowKey, error) {
	key := ti.key(k)
	keyID, ectx, err := ti.entry.contextFor(key, key.Version, pk)
	if err != nil {
		return rowKey{}, err
	}
	dk, err := envelope.NewDataKey()
	if err != nil {
		return rowKey{}, err
	}
	ck, err := envelope.NewCellKey(dk)
	if err != nil {
		return rowKey{}, err
	}
	w, err := c.connector.keyring.wrap(ctx, keyID, key.Version, ectx, dk)
	if err != nil {
		return rowKey{}, keyError(ti, k, pk, keyID, err)
	}
	return rowKey{wrapped: w, ck: ck}, nil
}

// unwrapRow unwraps a row's existing data key.
func (c *Conn) unwrapRow(ctx context.Context, ti *tableInfo, k int, pk []string, wrapped string) ([]byte, error) {
	wk, err := envelope.ParseWrappedKey(wrapped)
	if err != nil {
		return nil, keyError(ti, k, pk, "", err)
	}
	keyID, ectx, err := ti.entry.contextFor(ti.key(k), wk.Version, pk)
	if err != nil {
		return nil, keyError(ti, k, pk, "", err)
	}
	it := &unwrapItem{keyID: keyID, version: wk.Version, ctx: ectx, wrapped: wk.Ciphertext}
	c.connector.keyring.openItems(ctx, []*unwrapItem{it}, 1)
	if it.err != nil {
		return nil, keyError(ti, k, pk, keyID, it.err)
	}
	// A copy: the cache zeroes its keys on eviction, and callers (Rewrap)
	// wrap this one again later.
	return append([]byte(nil), it.key...), nil
}

// openKey unwraps a row's existing data key, ready for sealing.
func (c *Conn) openKey(ctx context.Context, ti *tableInfo, k int, pk []string, wrapped string) (rowKey, error) {
	dk, err := c.unwrapRow(ctx, ti, k, pk, wrapped)
	if err != nil {
		return rowKey{}, err
	}
	ck, err := envelope.NewCellKey(dk)
	if err != nil {
		return rowKey{}, err
	}
	return rowKey{wrapped: wrapped, ck: ck}, nil
}

// seal encrypts one cell value; nil stays NULL. Text columns get base64,
// bytea columns the raw cell.
func seal(ti *tableInfo, col string, ck *envelope.CellKey, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	pt, err := ti.colType(col).Encode(v)
	if err != nil {
		return nil, &CellError{Table: ti.table.Name, Column: col, Err: err}
	}
	cell, err := ck.Seal(ti.aad(col), pt)
	if err != nil {
		return nil, err
	}
	if ti.table.Encrypted[col].Bytea {
		return cell, nil
	}
	return base64.StdEncoding.EncodeToString(cell), nil
}

// idCache hands out primary keys from sequences in blocks, like a
// sequence CACHE, so that an INSERT usually needs no extra round trip.
type idCache struct {
	mu     sync.Mutex
	blocks map[string][]int64 // sequence → ids taken, not yet used
	size   int
}

func newIDCache(size int) *idCache { return &idCache{blocks: map[string][]int64{}, size: size} }

// take returns n ids of seq, taking a block from the sequence when fewer
// are left.
func (c *idCache) take(ctx context.Context, conn *pgx.Conn, seq string, n int) ([]int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := c.blocks[seq]
	if len(ids) < n {
		want := max(n-len(ids), c.size)
		rows, err := conn.Query(ctx, "SELECT nextval($1::regclass) FROM generate_series(1, $2)", seq, want)
		if err != nil {
			return nil, fmt.Errorf("kmspostgres: taking ids from %s: %w", seq, err)
		}
		more, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return nil, fmt.Errorf("kmspostgres: taking ids from %s: %w", seq, err)
		}
		ids = append(ids, more...)
	}
	out := append([]int64(nil), ids[:n]...)
	c.blocks[seq] = ids[n:]
	return out, nil
}

func (c *idCache) clear() {
	c.mu.Lock()
	c.blocks = map[string][]int64{}
	c.mu.Unlock()
}
