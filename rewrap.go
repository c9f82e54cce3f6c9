package kmspostgres

import (
	"context"
	"fmt"
	"maps"
	"slices"
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
	// MaxFailures is how many rows may fail (a key column that does not
	// parse or unwrap) before Rewrap gives up on the table, default 100:
	// many failing rows point at the schema map (a wrong key id or context
	// for a version), not at the rows.
	MaxFailures int
}

// RewrapStats counts what Rewrap did.
type RewrapStats struct {
	Rewrapped int // key columns rewritten
	Changed   int // rows whose key changed while being re-wrapped, left as they were
	// Failed counts rows skipped because their key column could not be
	// parsed or unwrapped; the rest of the table is still re-wrapped.
	Failed int
	// Failures holds the first MaxRewrapFailures of them.
	Failures []RewrapFailure
}

// MaxRewrapFailures bounds RewrapStats.Failures.
const MaxRewrapFailures = 20

// RewrapFailure is one row Rewrap skipped.
type RewrapFailure struct {
	Key string // the key name in the schema map
	PK  string // the row's primary key, as "id=42"
	Err error  // why; errors.Is works on ErrFormat, ErrDecrypt, ErrVersion
}

// Rewrap moves a table's rows to the current version of each of its keys
// without touching their encrypted cells: each row's data key is unwrapped
// under the version it was written with and wrapped again under the
// current version (its key id and context), and the key column is
// rewritten only if it still holds what was read. It needs no downtime and
// takes no lock beyond a single-row UPDATE; KMS calls happen outside any
// transaction. A row changed meanwhile is counted in Changed and can be
// re-wrapped by running Rewrap again.
//
// A row whose key column does not parse, does not unwrap (ErrDecrypt) or is
// at an inactive version (ErrVersion) is skipped and counted in Failed,
// with its error in Failures; the other rows are still re-wrapped. Any
// other error (the KMS unreachable or refusing, the database) stops Rewrap
// and is returned with the counts so far, as is exceeding MaxFailures.
func (c *Connector) Rewrap(ctx context.Context, table string, opts RewrapOptions) (RewrapStats, error) {
	var stats RewrapStats
	if opts.BatchSize <= 0 {
		opts.BatchSize = 500
	}
	if opts.MaxFailures <= 0 {
		opts.MaxFailures = 100
	}
	st := c.schema.Table(splitTable(table))
	if st == nil {
		return stats, fmt.Errorf("kmspostgres: rewrap: table %s is not in the schema map (its tables: %s)", table, strings.Join(slices.Sorted(maps.Keys(c.schema.Tables)), ", "))
	}
	dc, err := c.Connect(ctx)
	if err != nil {
		return stats, err
	}
	defer dc.Close()
	conn := dc.(*Conn)
	pc := conn.pc
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
				err      error // a failure of this row only
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
					if rowFailure(err) {
						it.err = keyColumnHint(err, rt.Name, rt.Keys[k].Column)
						return nil
					}
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
			ok := items[:0:0]
			for _, it := range items {
				if it.err == nil {
					ok = append(ok, it)
					continue
				}
				stats.Failed++
				if len(stats.Failures) < MaxRewrapFailures {
					stats.Failures = append(stats.Failures, RewrapFailure{Key: key.Name, PK: pkLabel(rt, it.pk), Err: it.err})
				}
			}
			items = ok
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
			if stats.Failed > opts.MaxFailures {
				return stats, fmt.Errorf("kmspostgres: rewrap %s: gave up after %d rows failed; if they all fail alike, check the schema map's key ids and contexts for their versions", table, stats.Failed)
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
