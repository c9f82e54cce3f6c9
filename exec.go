package kmspostgres

import (
	"context"
	"crypto/rand"
	"database/sql/driver"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/rewrite"
)

// valueOf resolves a written value to a Go value; nil is NULL.
func valueOf(v rewrite.Value, args []driver.NamedValue) (any, error) {
	switch v.Kind {
	case rewrite.ValParam:
		if v.Param < 0 || v.Param >= len(args) {
			return nil, fmt.Errorf("kmspostgres: the statement uses $%d but %d arguments were given", v.Param+1, len(args))
		}
		return resolveValue(args[v.Param].Value)
	case rewrite.ValConst:
		return v.Const, nil
	}
	return nil, nil
}

// resolveValue turns an argument into what it stands for, as database/sql
// would before a driver sees it: a driver.Valuer into its value (a nil
// pointer Valuer, or sql.NullString{}, into NULL), a pointer into what it
// points to. The driver accepts arguments unconverted (NamedValueChecker),
// so it must see that sql.NullTime{} is NULL, not a value to encrypt.
func resolveValue(v any) (any, error) {
	for depth := 0; depth < 8; depth++ {
		if v == nil {
			return nil, nil
		}
		rv := reflect.ValueOf(v)
		if rv.Kind() == reflect.Pointer && rv.IsNil() {
			return nil, nil
		}
		if vr, ok := v.(driver.Valuer); ok {
			dv, err := vr.Value()
			if err != nil {
				return nil, fmt.Errorf("kmspostgres: %T.Value: %w", v, err)
			}
			if dv == nil {
				return nil, nil
			}
			if _, still := dv.(driver.Valuer); !still {
				return dv, nil
			}
			v = dv
			continue
		}
		if rv.Kind() == reflect.Pointer {
			v = rv.Elem().Interface()
			continue
		}
		return v, nil
	}
	return nil, fmt.Errorf("kmspostgres: %T: Value() nests too deep", v)
}

// pkText renders a primary-key value exactly as PostgreSQL's ::text does,
// since the context written now must equal the context read later.
func pkText(v any, typ string) (string, error) {
	switch {
	case typ == "smallint" || typ == "integer" || typ == "bigint":
		b, err := envelope.Bigint.Encode(v)
		if err != nil {
			return "", err
		}
		i, _ := envelope.Bigint.Decode(b)
		return strconv.FormatInt(i.(int64), 10), nil
	case typ == "uuid":
		b, err := envelope.UUID.Encode(v)
		if err != nil {
			return "", err
		}
		s, _ := envelope.UUID.Decode(b)
		return s.(string), nil
	default:
		b, err := envelope.Text.Encode(v)
		return string(b), err
	}
}

func pkLabel(t *rewrite.Table, pk []string) string {
	parts := make([]string, len(pk))
	for i, v := range pk {
		parts[i] = t.PrimaryKey[i] + "=" + v
	}
	return strings.Join(parts, ", ")
}

// rowKey is a data key ready to use for one row, and its key column text.
type rowKey struct {
	wrapped string
	ck      *envelope.CellKey
}

// mint makes a fresh data key for a row and wraps it under the key's
// current version.
func (c *Conn) mint(ctx context.Context, ti *tableInfo, k int, pk []string) (rowKey, error) {
	key := ti.key(k)
	keyID, ectx, err := ti.st.contextFor(key, key.Version, pk)
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
	w, err := c.c.kr.wrap(ctx, keyID, key.Version, ectx, dk)
	if err != nil {
		return rowKey{}, fmt.Errorf("kmspostgres: %s (%s), key %s: %w", ti.rt.Name, pkLabel(ti.rt, pk), key.Name, err)
	}
	return rowKey{wrapped: w, ck: ck}, nil
}

// unwrapRow unwraps a row's existing data key.
func (c *Conn) unwrapRow(ctx context.Context, ti *tableInfo, k int, pk []string, wrapped string) ([]byte, error) {
	key := ti.key(k)
	fail := func(err error) ([]byte, error) {
		return nil, fmt.Errorf("kmspostgres: %s (%s), key %s: %w", ti.rt.Name, pkLabel(ti.rt, pk), key.Name, err)
	}
	wk, err := envelope.ParseWrappedKey(wrapped)
	if err != nil {
		return fail(err)
	}
	keyID, ectx, err := ti.st.contextFor(key, wk.Version, pk)
	if err != nil {
		return fail(err)
	}
	dk, err := c.c.kr.unwrap(ctx, keyID, wk.Version, ectx, wk.Ciphertext)
	if err != nil {
		return fail(err)
	}
	return dk, nil
}

// open unwraps a row's existing data key, ready for sealing.
func (c *Conn) open(ctx context.Context, ti *tableInfo, k int, pk []string, wrapped string) (rowKey, error) {
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

// seal encrypts one cell value; nil stays NULL.
func seal(ti *tableInfo, col string, ck *envelope.CellKey, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	pt, err := ti.colType(col).Encode(v)
	if err != nil {
		return nil, fmt.Errorf("kmspostgres: %s.%s: %w", ti.rt.Name, col, err)
	}
	cell, err := ck.Seal(envelope.CellAAD(ti.rt.Name, col), pt)
	if err != nil {
		return nil, err
	}
	if ti.rt.Encrypted[col].Bytea {
		return cell, nil
	}
	return base64.StdEncoding.EncodeToString(cell), nil
}

// prepareInsert mints and wraps one data key per row and key, encrypts
// every cell, and returns the rewritten INSERT with its arguments. Nothing
// is written if any step fails.
func (c *Conn) prepareInsert(ctx context.Context, p *rewrite.Plan, args []driver.NamedValue) (string, []driver.NamedValue, error) {
	ip := p.Insert
	ti := c.c.cat.info(ip.Table)
	slots := make([]any, ip.Slots)
	// Primary keys the driver makes.
	need := 0
	for _, row := range ip.Rows {
		for _, s := range row.PKSlot {
			if s >= 0 {
				need++
			}
		}
	}
	var gen []any
	if need > 0 {
		switch ip.Table.PKGen {
		case rewrite.PKUUID:
			for range need {
				var b [16]byte
				if _, err := rand.Read(b[:]); err != nil {
					return "", nil, err
				}
				b[6] = b[6]&0x0f | 0x40
				b[8] = b[8]&0x3f | 0x80
				s, _ := envelope.UUID.Decode(b[:])
				gen = append(gen, s)
			}
		default:
			if ip.Table.Sequence == "" {
				return "", nil, fmt.Errorf("kmspostgres: %s: no sequence found for the primary key", ip.Table.Name)
			}
			ids, err := c.c.ids.take(ctx, c.inner.Conn(), ip.Table.Sequence, need)
			if err != nil {
				return "", nil, err
			}
			for _, id := range ids {
				gen = append(gen, id)
			}
		}
	}
	type job struct {
		row, key int
		pk       []string
		out      rowKey
	}
	var jobs []*job
	rowPK := make([][]string, len(ip.Rows))
	for ri, row := range ip.Rows {
		pk := make([]string, len(row.PK))
		for pi, val := range row.PK {
			if s := row.PKSlot[pi]; s >= 0 {
				slots[s], gen = gen[0], gen[1:]
				pk[pi], _ = pkText(slots[s], ip.Table.PKTypes[pi])
				continue
			}
			v, err := valueOf(val, args)
			if err != nil {
				return "", nil, err
			}
			if v == nil {
				return "", nil, fmt.Errorf("kmspostgres: %s.%s: the primary key is NULL; it is part of the encryption context", ip.Table.Name, ip.Table.PrimaryKey[pi])
			}
			if pk[pi], err = pkText(v, ip.Table.PKTypes[pi]); err != nil {
				return "", nil, fmt.Errorf("kmspostgres: %s.%s: %w", ip.Table.Name, ip.Table.PrimaryKey[pi], err)
			}
		}
		rowPK[ri] = pk
		for k, ks := range row.KeySlot {
			if ks < 0 {
				continue
			}
			nonNull := false
			for _, cell := range row.Cells {
				if cell.Key == k {
					v, err := valueOf(cell.Value, args)
					if err != nil {
						return "", nil, err
					}
					nonNull = nonNull || v != nil
				}
			}
			if nonNull {
				jobs = append(jobs, &job{row: ri, key: k, pk: pk})
			}
		}
	}
	err := parallel(len(jobs), c.c.parallelism, func(i int) error {
		j := jobs[i]
		var err error
		j.out, err = c.mint(ctx, ti, j.key, j.pk)
		return err
	})
	if err != nil {
		return "", nil, err
	}
	keys := map[[2]int]rowKey{}
	for _, j := range jobs {
		keys[[2]int{j.row, j.key}] = j.out
		slots[ip.Rows[j.row].KeySlot[j.key]] = j.out.wrapped
	}
	for ri, row := range ip.Rows {
		for _, cell := range row.Cells {
			v, _ := valueOf(cell.Value, args)
			rk, ok := keys[[2]int{ri, cell.Key}]
			if v == nil || !ok {
				slots[cell.Slot] = nil
				continue
			}
			if slots[cell.Slot], err = seal(ti, cell.Column, rk.ck, v); err != nil {
				return "", nil, err
			}
		}
	}
	a, err := planArgs(p.Args, args, slots)
	return p.SQL, a, err
}

// updRow is a row an UPDATE will change: its ctid, primary key and the
// current text of each key column the UPDATE writes under.
type updRow struct {
	ctid string
	pk   []string
	id   string // pk joined, to match a row across the two reads
	keys []*string
}

func (c *Conn) selectRows(ctx context.Context, sql string, args []any, npk, nkeys int) ([]updRow, error) {
	rows, err := c.inner.Conn().Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []updRow
	for rows.Next() {
		r := updRow{pk: make([]string, npk), keys: make([]*string, nkeys)}
		dest := []any{&r.ctid}
		for i := range r.pk {
			dest = append(dest, &r.pk[i])
		}
		for i := range r.keys {
			dest = append(dest, &r.keys[i])
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		r.id = strings.Join(r.pk, "\x00")
		out = append(out, r)
	}
	return out, rows.Err()
}

// prepareUpdate finds the rows an UPDATE of encrypted columns will change,
// keys each one (a fresh data key when the UPDATE sets every column under
// the key or the row has none, else the row's own key, unwrapped), locks
// them, and returns the rewritten UPDATE with per-row arrays. KMS calls
// happen before the rows are locked; a row that changed in between is
// keyed again under the lock. finish ends the transaction the driver
// opened, if it opened one.
func (c *Conn) prepareUpdate(ctx context.Context, p *rewrite.Plan, args []driver.NamedValue) (string, []driver.NamedValue, func(error) error, error) {
	up := p.Update
	ti := c.c.cat.info(up.Table)
	conn := c.inner.Conn()
	finish := func(err error) error { return err }
	if conn.PgConn().TxStatus() == 'I' {
		if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
			return "", nil, nil, err
		}
		finish = func(err error) error {
			if err != nil {
				_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
				return err
			}
			if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
				_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
				return err
			}
			return nil
		}
	}
	q, a, err := c.keyUpdate(ctx, p, ti, args)
	if err != nil {
		return "", nil, nil, finish(err)
	}
	return q, a, finish, nil
}

func (c *Conn) keyUpdate(ctx context.Context, p *rewrite.Plan, ti *tableInfo, args []driver.NamedValue) (string, []driver.NamedValue, error) {
	up := p.Update
	sargs, err := planArgs(up.SelectArgs, args, nil)
	if err != nil {
		return "", nil, err
	}
	anyArgs := make([]any, len(sargs))
	for i, a := range sargs {
		anyArgs[i] = a.Value
	}
	// Values are the same for every row: resolve them once.
	vals := make([]any, len(up.Cells))
	skip := make([]bool, len(up.Keys)) // fresh key whose cells are all NULL: key NULL, no KMS call
	for i, cell := range up.Cells {
		if vals[i], err = valueOf(cell.Value, args); err != nil {
			return "", nil, err
		}
	}
	for i, k := range up.Keys {
		if !k.Fresh {
			continue
		}
		allNull := true
		for j, cell := range up.Cells {
			if cell.Key == k.Key && vals[j] != nil {
				allNull = false
			}
		}
		skip[i] = allNull
	}
	keyRows := func(rows []updRow, prior map[string]*updRow, priorKeys map[string][]rowKey) (map[string][]rowKey, error) {
		out := make(map[string][]rowKey, len(rows))
		type job struct {
			id string
			r  *updRow
			i  int
		}
		var jobs []*job
		for ri := range rows {
			r := &rows[ri]
			id := r.id
			out[id] = make([]rowKey, len(up.Keys))
			for i, k := range up.Keys {
				if skip[i] {
					continue
				}
				if pr, ok := prior[id]; ok && (k.Fresh || sameKey(pr.keys[i], r.keys[i])) {
					out[id][i] = priorKeys[id][i]
					continue
				}
				jobs = append(jobs, &job{id: id, r: r, i: i})
			}
		}
		err := parallel(len(jobs), c.c.parallelism, func(n int) error {
			j := jobs[n]
			k := up.Keys[j.i]
			var rk rowKey
			var err error
			if k.Fresh || j.r.keys[j.i] == nil {
				rk, err = c.mint(ctx, ti, k.Key, j.r.pk)
			} else {
				rk, err = c.open(ctx, ti, k.Key, j.r.pk, *j.r.keys[j.i])
				if errors.Is(err, ErrPermission) {
					err = fmt.Errorf("%w (this UPDATE keeps the row's data key because it does not set every column under key %s; an encrypt-only server must set them all, so that the driver can mint a new key)", err, ti.rt.Keys[k.Key].Name)
				}
			}
			if err != nil {
				return err
			}
			out[j.id][j.i] = rk
			return nil
		})
		if err != nil {
			return nil, err
		}
		return out, nil
	}
	npk, nk := len(up.Table.PrimaryKey), len(up.Keys)
	peek, err := c.selectRows(ctx, up.SelectSQL, anyArgs, npk, nk)
	if err != nil {
		return "", nil, err
	}
	peekKeys, err := keyRows(peek, nil, nil)
	if err != nil {
		return "", nil, err
	}
	prior := make(map[string]*updRow, len(peek))
	for i := range peek {
		prior[peek[i].id] = &peek[i]
	}
	locked, err := c.selectRows(ctx, up.LockSQL, anyArgs, npk, nk)
	if err != nil {
		return "", nil, err
	}
	keys, err := keyRows(locked, prior, peekKeys)
	if err != nil {
		return "", nil, err
	}
	slots := make([]any, up.Slots)
	ctids := make([]string, len(locked))
	for i, r := range locked {
		ctids[i] = r.ctid
	}
	slots[up.CtidSlot] = ctids
	keyIndex := map[int]int{}
	for i, k := range up.Keys {
		keyIndex[k.Key] = i
	}
	for ci, cell := range up.Cells {
		bytea := ti.rt.Encrypted[cell.Column].Bytea
		texts := make([]*string, len(locked))
		raws := make([][]byte, len(locked))
		for ri, r := range locked {
			rk := keys[r.id][keyIndex[cell.Key]]
			if vals[ci] == nil || rk.ck == nil {
				continue
			}
			v, err := seal(ti, cell.Column, rk.ck, vals[ci])
			if err != nil {
				return "", nil, err
			}
			if bytea {
				raws[ri] = v.([]byte)
			} else {
				s := v.(string)
				texts[ri] = &s
			}
		}
		if bytea {
			slots[cell.Slot] = raws
		} else {
			slots[cell.Slot] = texts
		}
	}
	for i, k := range up.Keys {
		col := make([]*string, len(locked))
		for ri, r := range locked {
			if rk := keys[r.id][i]; rk.ck != nil {
				w := rk.wrapped
				col[ri] = &w
			}
		}
		slots[k.Slot] = col
	}
	a, err := planArgs(p.Args, args, slots)
	return p.SQL, a, err
}

func sameKey(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// idCache hands out primary keys from sequences in blocks, like a
// sequence CACHE, so that an INSERT usually needs no extra round trip.
type idCache struct {
	mu     sync.Mutex
	blocks map[string]*idBlock
	size   int
}

type idBlock struct{ ids []int64 }

func (c *idCache) take(ctx context.Context, conn *pgx.Conn, seq string, n int) ([]int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.blocks[seq]
	if b == nil {
		b = &idBlock{}
		c.blocks[seq] = b
	}
	if len(b.ids) < n {
		want := max(n-len(b.ids), c.size)
		rows, err := conn.Query(ctx, "SELECT nextval($1::regclass) FROM generate_series(1, $2)", seq, want)
		if err != nil {
			return nil, fmt.Errorf("kmspostgres: taking ids from %s: %w", seq, err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return nil, fmt.Errorf("kmspostgres: taking ids from %s: %w", seq, err)
		}
		b.ids = append(b.ids, ids...)
	}
	out := append([]int64(nil), b.ids[:n]...)
	b.ids = b.ids[n:]
	return out, nil
}

func (c *idCache) clear() {
	c.mu.Lock()
	c.blocks = map[string]*idBlock{}
	c.mu.Unlock()
}
