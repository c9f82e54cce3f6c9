package kmspostgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// RewrapOptions tunes Rewrap.
type RewrapOptions struct {
	// All re-wraps every row's data keys, not only those below the key's
	// current version: after a master-key rotation on the KMS side, to move
	// old rows to the new master-key version.
	All bool
	// BatchSize is how many rows are read per round (default 500).
	BatchSize int
}

// RewrapStats counts what Rewrap did.
type RewrapStats struct {
	Rewrapped int // key columns rewritten
	Changed   int // rows whose key changed while being re-wrapped, left as they were
}

// Rewrap moves a table's rows to the current version of each of its keys
// without touching their encrypted cells: each row's data key is unwrapped
// under the version it was written with and wrapped again under the
// current version (its key id and context), and the key column is
// rewritten only if it still holds what was read. It needs no downtime and
// takes no lock beyond a single-row UPDATE; KMS calls happen outside any
// transaction. A row changed meanwhile is counted in Changed and can be
// re-wrapped by running Rewrap again.
func (c *Connector) Rewrap(ctx context.Context, table string, opts RewrapOptions) (RewrapStats, error) {
	var stats RewrapStats
	if opts.BatchSize <= 0 {
		opts.BatchSize = 500
	}
	st := c.schema.Table(splitTable(table))
	if st == nil {
		return stats, fmt.Errorf("kmspostgres: rewrap: table %s is not in the schema map", table)
	}
	dc, err := c.Connect(ctx)
	if err != nil {
		return stats, err
	}
	defer dc.Close()
	conn := dc.(*Conn)
	pc := conn.inner.Conn()
	rt, err := boundCatalog{c: c.catalog, ctx: ctx, conn: pc}.Encrypted(splitTable(table))
	if err != nil {
		return stats, err
	}
	ti := c.catalog.info(rt)
	rel := pgx.Identifier{rt.Schema, rt.Relname}.Sanitize()
	var pkCols, pkText, pkCmp, pkArgs []string
	for i, p := range rt.PrimaryKey {
		id := pgx.Identifier{p}.Sanitize()
		pkCols = append(pkCols, id)
		// Aliased: ORDER BY "id" would otherwise sort the text output.
		pkText = append(pkText, id+"::text AS __kmspg_pk"+strconv.Itoa(i))
		pkArgs = append(pkArgs, "$"+strconv.Itoa(i+1)+"::"+rt.PKTypes[i])
	}
	for i := range rt.PrimaryKey {
		pkCmp = append(pkCmp, pkCols[i]+" = $"+strconv.Itoa(i+3)+"::"+rt.PKTypes[i])
	}
	for k := range rt.Keys {
		key := ti.key(k)
		kc := pgx.Identifier{rt.Keys[k].Column}.Sanitize()
		filter := kc + " IS NOT NULL"
		if !opts.All {
			filter += " AND " + kc + " NOT LIKE 'v" + strconv.Itoa(key.Version) + ":%'"
		}
		var last []string
		for {
			q := "SELECT " + strings.Join(pkText, ", ") + ", " + kc + " FROM " + rel + " WHERE " + filter
			var args []any
			if last != nil {
				q += " AND (" + strings.Join(pkCols, ", ") + ") > (" + strings.Join(pkArgs, ", ") + ")"
				for _, v := range last {
					args = append(args, v)
				}
			}
			q += " ORDER BY " + strings.Join(pkCols, ", ") + " LIMIT " + strconv.Itoa(opts.BatchSize)
			rows, err := pc.Query(ctx, q, args...)
			if err != nil {
				return stats, fmt.Errorf("kmspostgres: rewrap %s: %w", table, err)
			}
			type item struct {
				pk       []string
				old, new string
			}
			var items []*item
			for rows.Next() {
				it := &item{pk: make([]string, len(rt.PrimaryKey))}
				dest := make([]any, 0, len(it.pk)+1)
				for i := range it.pk {
					dest = append(dest, &it.pk[i])
				}
				dest = append(dest, &it.old)
				if err := rows.Scan(dest...); err != nil {
					rows.Close()
					return stats, err
				}
				items = append(items, it)
			}
			if err := rows.Err(); err != nil {
				return stats, err
			}
			if len(items) == 0 {
				break
			}
			last = items[len(items)-1].pk
			err = forEach(len(items), c.kmsConcurrency, func(i int) error {
				it := items[i]
				dk, err := conn.unwrapRow(ctx, ti, k, it.pk, it.old)
				if err != nil {
					return err
				}
				keyID, ectx, err := ti.entry.contextFor(key, key.Version, it.pk)
				if err != nil {
					return err
				}
				w, err := c.keyring.wrap(ctx, keyID, key.Version, ectx, dk)
				if err != nil {
					return keyError(ti, k, it.pk, keyID, err)
				}
				it.new = w
				return nil
			})
			if err != nil {
				return stats, err
			}
			upd := "UPDATE " + rel + " SET " + kc + " = $1 WHERE " + kc + " = $2 AND " + strings.Join(pkCmp, " AND ")
			for _, it := range items {
				args := []any{it.new, it.old}
				for _, v := range it.pk {
					args = append(args, v)
				}
				tag, err := pc.Exec(ctx, upd, args...)
				if err != nil {
					return stats, fmt.Errorf("kmspostgres: rewrap %s (%s): %w", rt.Name, pkLabel(rt, it.pk), err)
				}
				if tag.RowsAffected() == 1 {
					stats.Rewrapped++
				} else {
					stats.Changed++
				}
			}
		}
	}
	return stats, nil
}

func splitTable(name string) (schema, table string) {
	if i := strings.IndexByte(name, '.'); i >= 0 {
		return name[:i], name[i+1:]
	}
	return "", name
}
