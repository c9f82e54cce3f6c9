package kmspostgres

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"

	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/rewrite"
)

// rowKeyID identifies a row's data key within a result set: table, key,
// wrapped key text and primary key (joined only when composite).
type rowKeyID struct {
	table   string
	key     int
	wrapped string
	pk      string
}

func joinPK(pk []string) string {
	if len(pk) == 1 {
		return pk[0]
	}
	return strings.Join(pk, "\x00")
}

// windowKeys is what decrypting one window of rows needs: for each row and
// source, the primary key and the id of its data key, and the keys still
// to unwrap.
type windowKeys struct {
	infos   []*tableInfo // per source
	pks     [][][]string // [row][source] primary-key values as text
	ids     [][]rowKeyID // [row][source] key id; zero when the key column is NULL
	pending map[rowKeyID]*unwrapItem
	items   []*unwrapItem
	lazy    []lazyItem // backing array of the window's lazy items
	idBuf   []byte     // backing array of the lazy items' cache ids
}

// lazyItem is an item resolved only on a cache miss, with its source.
type lazyItem struct {
	it  unwrapItem
	src rowSource
}

// decrypt unwraps the window's keys and replaces every encrypted cell with
// its plaintext value: collect the keys the rows need, unwrap those not
// unwrapped yet in one go, open the cells.
func (r *rows) decrypt() error {
	// Keys live for one window: a result set that kept every key it
	// unwrapped would grow with the result (about 1.6 KB of cipher state a
	// row). A key used again in the same window is still unwrapped once.
	if len(r.keys) > 0 {
		clear(r.keys)
	}
	w, err := r.collectKeys()
	if err != nil {
		return err
	}
	if err := r.c.connector.admitWindow(r.ctx, w); err != nil {
		return err
	}
	r.unwrapKeys(w)
	if err := r.openCells(w); err != nil {
		return err
	}
	if err := r.verify(w); err != nil {
		return err
	}
	r.openedCells()
	return nil
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
		ids:     make([][]rowKeyID, len(r.buf)),
		pending: make(map[rowKeyID]*unwrapItem, len(r.buf)),
	}
	for i, s := range out.Sources {
		w.infos[i] = r.c.connector.catalog.info(s.Table)
	}
	// One backing array each for the window's ids and primary keys, not
	// one per row.
	nsrc, npk := len(out.Sources), 0
	for _, s := range out.Sources {
		npk += len(s.PKAt)
	}
	idBuf := make([]rowKeyID, len(r.buf)*nsrc)
	pkBuf := make([]string, len(r.buf)*npk)
	pkRows := make([][]string, len(r.buf)*nsrc)
	for ri, row := range r.buf {
		w.ids[ri] = idBuf[ri*nsrc : (ri+1)*nsrc : (ri+1)*nsrc]
		w.pks[ri] = pkRows[ri*nsrc : (ri+1)*nsrc : (ri+1)*nsrc]
		for si, s := range out.Sources {
			pk := pkBuf[:len(s.PKAt):len(s.PKAt)]
			pkBuf = pkBuf[len(s.PKAt):]
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
			// keys already unwrapped. The id is made of strings the row
			// already holds.
			id := rowKeyID{table: s.Table.Name, key: s.Key, wrapped: text, pk: joinPK(pk)}
			w.ids[ri][si] = id
			if _, ok := r.keys[id]; ok {
				continue
			}
			if _, ok := w.pending[id]; ok {
				continue
			}
			it, err := r.itemFor(w, w.infos[si], s, pk, id)
			if err != nil {
				ti := w.infos[si]
				return nil, r.sourceError(w, si, pk, keyColumnHint(err, ti.table.Name, ti.table.Keys[s.Key].Column))
			}
			w.pending[id] = it
			w.items = append(w.items, it)
		}
	}
	return w, nil
}

// itemFor is the item that unwraps a row's key column. With the data-key
// cache on, parsing it and building its context wait for a cache miss:
// the item is looked up by what the row holds (rowKeyID.appendCacheID).
func (r *rows) itemFor(w *windowKeys, ti *tableInfo, s rewrite.Source, pk []string, id rowKeyID) (*unwrapItem, error) {
	text := id.wrapped
	if r.c.connector.keyring.cache != nil {
		// Items and their sources come from one array per window.
		if len(w.lazy) == cap(w.lazy) {
			w.lazy = make([]lazyItem, 0, len(r.buf)*len(r.out.Sources))
		}
		w.lazy = append(w.lazy, lazyItem{src: rowSource{ti: ti, key: s.Key, pk: pk, text: text}})
		l := &w.lazy[len(w.lazy)-1]
		// The ids share one buffer per window: a cache hit copies nothing.
		if w.idBuf == nil { // room for the window's ids, if they are about this one's size
			w.idBuf = make([]byte, 0, (len(id.table)+len(id.pk)+len(id.wrapped)+16)*len(r.buf)*len(r.out.Sources))
		}
		start := len(w.idBuf)
		w.idBuf = id.appendCacheID(w.idBuf)
		l.it = unwrapItem{rowID: w.idBuf[start:len(w.idBuf):len(w.idBuf)], row: &l.src}
		return &l.it, nil
	}
	return unwrapItemFor(ti, s, text, pk)
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

// unwrapKeys unwraps the pending keys together (through the data-key
// cache when there is one) and keeps the cell keys of those that
// succeeded; failures stay in their item for openCells.
func (r *rows) unwrapKeys(w *windowKeys) {
	if len(w.items) == 0 {
		return
	}
	r.c.connector.keyring.openItems(r.ctx, w.items, r.c.connector.kmsConcurrency)
	for id, it := range w.pending {
		if it.err == nil {
			r.keys[id] = it.ck
		}
	}
}

// parallelOpen is the window size from which cells are opened on two
// goroutines (AES-GCM is CPU work; the second core idles otherwise).
const parallelOpen = 128

// openCells replaces every encrypted cell of the window with its
// plaintext value. A failure reports the first failing row.
func (r *rows) openCells(w *windowKeys) error {
	n := len(r.buf)
	if n < parallelOpen || runtime.GOMAXPROCS(0) < 2 {
		return r.openRows(w, 0, n)
	}
	half := n / 2
	errc := make(chan error, 1)
	go func() { errc <- r.openRows(w, half, n) }()
	first := r.openRows(w, 0, half)
	second := <-errc
	if first != nil {
		return first
	}
	return second
}

// openRows opens the cells of rows [lo, hi) of the window. It reads only
// what collectKeys and unwrapKeys left, so two calls on disjoint ranges
// may run at once.
func (r *rows) openRows(w *windowKeys, lo, hi int) error {
	var scratch []byte // base64 decoding, reused cell after cell
	for ri := lo; ri < hi; ri++ {
		row := r.buf[ri]
		for i, oc := range r.out.Cols {
			if oc.Table == nil || row[i] == nil {
				continue
			}
			si := oc.Source
			ti := w.infos[si]
			pk := w.pks[ri][si]
			id := w.ids[ri][si]
			if id == (rowKeyID{}) {
				keyCol := ti.table.Keys[r.out.Sources[si].Key].Column
				if !ti.entry.Migrating {
					return cellError(ti, oc.Column, pk, fmt.Errorf("%w: the value has no data key (key column %s is NULL)", ErrDecrypt, keyCol))
				}
				v, err := legacyValue(ti, oc.Column, keyCol, row[i])
				if err != nil {
					return cellError(ti, oc.Column, pk, err)
				}
				row[i] = v
				continue
			}
			ck := r.keys[id]
			if ck == nil {
				return cellError(ti, oc.Column, pk, keyColumnHint(w.pending[id].err, ti.table.Name, ti.table.Keys[r.out.Sources[si].Key].Column))
			}
			v, err := openCellBuf(ti, oc.Column, ti.aad(oc.Column), ck, row[i], &scratch)
			if err != nil {
				return cellError(ti, oc.Column, pk, err)
			}
			row[i] = v
		}
	}
	return nil
}

// openCell decrypts one stored cell (base64 text or raw bytea) with its
// associated data and decodes it to its declared type.
func openCell(ti *tableInfo, col string, aad []byte, ck *envelope.CellKey, stored any) (any, error) {
	return openCellBuf(ti, col, aad, ck, stored, nil)
}

// openCellBuf is openCell decoding base64 into *scratch (grown as needed)
// when scratch is not nil: the value returned never shares it.
func openCellBuf(ti *tableInfo, col string, aad []byte, ck *envelope.CellKey, stored any, scratch *[]byte) (any, error) {
	var pt []byte
	var err error
	switch v := stored.(type) {
	case string:
		var cell []byte
		if scratch != nil {
			cell, err = envelope.DecodeBase64Into(*scratch, v)
			*scratch = cell[:0]
		} else {
			cell, err = envelope.DecodeBase64(v)
		}
		if err != nil {
			return nil, err
		}
		pt, err = ck.OpenInPlace(aad, cell) // the decoded buffer is ours
		if err != nil {
			return nil, err
		}
		if scratch != nil {
			d, err := ti.colType(col).Decode(pt)
			if b, ok := d.([]byte); ok && err == nil {
				d = bytes.Clone(b) // Decode returns bytea and JSON as they are
			}
			return d, err
		}
	case []byte:
		if pt, err = ck.Open(aad, v); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: stored as %T", ErrFormat, v)
	}
	return ti.colType(col).Decode(pt)
}
