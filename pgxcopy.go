package kmspostgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/kmspostgres/kmspostgres/rewrite"
)

// copyChunk is how many rows CopyFrom keys and seals at once: one block
// of ids, the KMS calls of the chunk in parallel, then one COPY.
const copyChunk = 1024

// CopyFrom is pgx's CopyFrom through the engine. Whether a COPY may run
// as it is, and what it must write, is decided as for the INSERT of one
// row with the same columns: the table is resolved by the server, and its
// plan refuses what an INSERT would refuse. A table the INSERT would pass
// through is copied as pgx copies. Into an encrypted table, rows are read
// in chunks: each chunk gets its primary keys, one data key per row and
// key (minted concurrently), sealed cells and blind-index values, then is
// sent with COPY. Outside a transaction the chunks run inside one, so a
// failure leaves nothing written.
func (s pgxSession) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	c := s.c
	if len(columns) == 0 {
		return 0, fmt.Errorf("kmspostgres: CopyFrom into %s: name the columns", table.Sanitize())
	}
	var b strings.Builder
	b.WriteString("INSERT INTO " + table.Sanitize() + " (")
	for i, col := range columns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(pgx.Identifier{col}.Sanitize())
	}
	b.WriteString(") VALUES (")
	for i := range columns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(i+1))
	}
	b.WriteString(")")
	p, err := c.plan(ctx, b.String())
	if err != nil {
		return 0, err
	}
	if p.Passthrough {
		return c.pc.CopyFrom(ctx, table, columns, src)
	}
	if p.Insert == nil || p.Out != nil || len(p.Insert.Rows) != 1 {
		return 0, fmt.Errorf("kmspostgres: internal: CopyFrom into %s has an unexpected plan; refusing", table.Sanitize())
	}
	for _, a := range p.Args {
		if a.Lookup > 0 {
			return 0, fmt.Errorf("kmspostgres: internal: CopyFrom into %s has an unexpected plan; refusing", table.Sanitize())
		}
	}
	cols, params, err := rewrite.InsertTargets(p.SQL)
	if err != nil {
		return 0, err
	}
	finish, err := c.ensureTx(ctx)
	if err != nil {
		return 0, err
	}
	n, err := s.copyChunks(ctx, p, table, len(columns), cols, params, src)
	if err = finish(err); err != nil {
		return 0, c.staleCheck(err)
	}
	return n, nil
}

func (s pgxSession) copyChunks(ctx context.Context, p *rewrite.Plan, table pgx.Identifier, k int, cols []string, params []int, src pgx.CopyFromSource) (int64, error) {
	var total int64
	args := make([]any, 0, copyChunk*k)
	for {
		args = args[:0]
		n := 0
		for n < copyChunk && src.Next() {
			vals, err := src.Values()
			if err != nil {
				return 0, err
			}
			if len(vals) != k {
				return 0, fmt.Errorf("kmspostgres: CopyFrom into %s: a row has %d values for %d columns", table.Sanitize(), len(vals), k)
			}
			args = append(args, vals...)
			n++
		}
		if err := src.Err(); err != nil {
			return 0, err
		}
		if n == 0 {
			return total, nil
		}
		rows, err := s.sealChunk(ctx, p, n, k, args, params)
		if err != nil {
			return 0, err
		}
		copied, err := s.c.pc.CopyFrom(ctx, table, cols, pgx.CopyFromRows(rows))
		if err != nil {
			return 0, err
		}
		total += copied
		if n < copyChunk {
			return total, nil
		}
	}
}

// sealChunk keys and seals n rows as one INSERT of n rows would, and
// returns them as COPY rows in the rewritten column order.
func (s pgxSession) sealChunk(ctx context.Context, p *rewrite.Plan, n, k int, args []any, params []int) ([][]any, error) {
	cp := rewrite.CopyPlan(p, n, k)
	_, a, err := s.c.prepareInsert(ctx, cp, namedArgs(args))
	if err != nil {
		return nil, err
	}
	m := len(p.Args)
	if len(a) != n*m {
		return nil, fmt.Errorf("kmspostgres: internal: CopyFrom sealed %d values for %d rows of %d; refusing", len(a), n, m)
	}
	rows := make([][]any, n)
	flat := make([]any, n*len(params))
	for r := range n {
		row := flat[r*len(params) : (r+1)*len(params) : (r+1)*len(params)]
		for i, pi := range params {
			if pi >= 0 {
				row[i] = a[r*m+pi].Value
			}
		}
		rows[r] = row
	}
	return rows, nil
}
