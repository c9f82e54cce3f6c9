package kmspostgres

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/rewrite"
)

// windowKeys is what decrypting one window of rows needs: for each row and
// source, the primary key and the id of its data key, and the keys still
// to unwrap.
type windowKeys struct {
	infos   []*tableInfo // per source
	pks     [][][]string // [row][source] primary-key values as text
	ids     [][]string   // [row][source] key id; "" when the key column is NULL
	pending map[string]*unwrapItem
	items   []*unwrapItem
}

// decrypt unwraps the window's keys and replaces every encrypted cell with
// its plaintext value: collect the keys the rows need, unwrap those not
// unwrapped yet in one go, open the cells.
func (r *rows) decrypt() error {
	w, err := r.collectKeys()
	if err != nil {
		return err
	}
	r.unwrapKeys(w)
	if err := r.openCells(w); err != nil {
		return err
	}
	return r.verify(w)
}

// sourceError names the first decrypted column of a source, for failures
// of the row's key rather than of one cell.
func (r *rows) sourceError(w *windowKeys, si int, pk []string, err error) error {
	col := ""
	for _, oc := range r.out.Cols {
		if oc.Table != nil && oc.Source == si {
			col = oc.Column
			break
		}
	}
	return cellError(w.infos[si], col, pk, err)
}

func cellError(ti *tableInfo, col string, pk []string, err error) error {
	return &CellError{Table: ti.table.Name, Column: col, PK: pkLabel(ti.table, pk), Err: err}
}

// collectKeys reads each row's key columns and primary keys, and lists the
// distinct data keys the window needs that this result set has not
// unwrapped yet.
func (r *rows) collectKeys() (*windowKeys, error) {
	out := r.out
	w := &windowKeys{
		infos:   make([]*tableInfo, len(out.Sources)),
		pks:     make([][][]string, len(r.buf)),
		ids:     make([][]string, len(r.buf)),
		pending: make(map[string]*unwrapItem, len(r.buf)),
	}
	for i, s := range out.Sources {
		w.infos[i] = r.c.connector.catalog.info(s.Table)
	}
	for ri, row := range r.buf {
		w.ids[ri] = make([]string, len(out.Sources))
		w.pks[ri] = make([][]string, len(out.Sources))
		for si, s := range out.Sources {
			pk := make([]string, len(s.PKAt))
			for j, at := range s.PKAt {
				pk[j], _ = row[at].(string)
			}
			w.pks[ri][si] = pk
			kv := row[s.KeyAt]
			if kv == nil {
				continue
			}
			text, ok := kv.(string)
			if !ok {
				return nil, r.sourceError(w, si, pk, fmt.Errorf("%w: the key column is not text", ErrFormat))
			}
			// Table, key, wrapped key (which carries the version) and
			// primary key determine the context: no need to build it for
			// keys already unwrapped.
			id := s.Table.Name + "\x00" + strconv.Itoa(s.Key) + "\x00" + text + "\x00" + strings.Join(pk, "\x00")
			w.ids[ri][si] = id
			if _, ok := r.keys[id]; ok {
				continue
			}
			if _, ok := w.pending[id]; ok {
				continue
			}
			it, err := unwrapItemFor(w.infos[si], s, text, pk)
			if err != nil {
				return nil, r.sourceError(w, si, pk, err)
			}
			w.pending[id] = it
			w.items = append(w.items, it)
		}
	}
	return w, nil
}

// unwrapItemFor parses a key column and builds the context to unwrap it.
func unwrapItemFor(ti *tableInfo, s rewrite.Source, text string, pk []string) (*unwrapItem, error) {
	wk, err := envelope.ParseWrappedKey(text)
	if err != nil {
		return nil, err
	}
	keyID, ectx, err := ti.entry.contextFor(ti.key(s.Key), wk.Version, pk)
	if err != nil {
		return nil, err
	}
	return &unwrapItem{keyID: keyID, version: wk.Version, ctx: ectx, wrapped: wk.Ciphertext}, nil
}

// unwrapKeys unwraps the pending keys together and keeps the cell keys of
// those that succeeded; failures stay in their item for openCells.
func (r *rows) unwrapKeys(w *windowKeys) {
	if len(w.items) == 0 {
		return
	}
	r.c.connector.keyring.unwrapAll(r.ctx, w.items, r.c.connector.kmsConcurrency)
	for id, it := range w.pending {
		if it.err != nil {
			continue
		}
		ck, err := envelope.NewCellKey(it.key)
		if err != nil {
			it.err = err
			continue
		}
		r.keys[id] = ck
	}
}

// openCells replaces every encrypted cell of the window with its
// plaintext value.
func (r *rows) openCells(w *windowKeys) error {
	for ri, row := range r.buf {
		for i, oc := range r.out.Cols {
			if oc.Table == nil || row[i] == nil {
				continue
			}
			si := oc.Source
			ti := w.infos[si]
			pk := w.pks[ri][si]
			id := w.ids[ri][si]
			if id == "" {
				return cellError(ti, oc.Column, pk, fmt.Errorf("%w: the value has no data key (key column %s is NULL)", ErrDecrypt, ti.table.Keys[r.out.Sources[si].Key].Column))
			}
			ck := r.keys[id]
			if ck == nil {
				return cellError(ti, oc.Column, pk, w.pending[id].err)
			}
			v, err := openCell(ti, oc.Column, ck, row[i])
			if err != nil {
				return cellError(ti, oc.Column, pk, err)
			}
			row[i] = v
		}
	}
	return nil
}

// openCell decrypts one stored cell (base64 text or raw bytea) and decodes
// it to its declared type.
func openCell(ti *tableInfo, col string, ck *envelope.CellKey, stored any) (any, error) {
	var cell []byte
	switch v := stored.(type) {
	case string:
		b, err := envelope.DecodeBase64(v)
		if err != nil {
			return nil, err
		}
		cell = b
	case []byte:
		cell = v
	default:
		return nil, fmt.Errorf("%w: stored as %T", ErrFormat, v)
	}
	pt, err := ck.Open(envelope.CellAAD(ti.table.Name, col), cell)
	if err != nil {
		return nil, err
	}
	return ti.colType(col).Decode(pt)
}
