package kmspostgres

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kmspostgres/kmspostgres/blindindex"
	"github.com/kmspostgres/kmspostgres/envelope"
	"github.com/kmspostgres/kmspostgres/rewrite"
)

// BlindIndex makes an encrypted column searchable by equality: the driver
// stores a keyed digest of the column's normalized plaintext in a plain
// index column beside it, and rewrites WHERE col = … to compare that column.
// See the README, "Searching encrypted columns", for what it leaks.
type BlindIndex struct {
	// Column is the index column, default "<column>_bidx"; text (base64)
	// or bytea (raw 32 bytes). Its name is part of the per-index key.
	Column string
	// Algorithm is blindindex.Argon2id (the default, as the blind_index
	// gem's) or blindindex.HMACSHA256.
	Algorithm blindindex.Algorithm
	// Expression names a normalizer: "lower", "trim", "lower_trim", or ""
	// or "none" for none.
	Expression string
	// Normalize, when set (in Go only), is used instead of Expression.
	Normalize func(string) string
	// KeyOf, "table.column", gives this index the key of that column's
	// index instead of its own, so that equal values in the two columns
	// have equal index values and a join (a.email = b.email) can compare
	// them. Both indexes must use the same algorithm, expression and
	// storage (text or bytea); that index must not itself have KeyOf.
	KeyOf string
	// MasterKeyEnv names the environment variable that holds this index's
	// master key (64 hex characters), instead of the connector's
	// (BLIND_INDEX_MASTER_KEY, or blind_index_master_key in the map): the
	// key a rotation (Rotate.MasterKeyEnv) moved the index to.
	MasterKeyEnv string
	// Rotate, when set, is the next index of the column, during a
	// rotation: every write stores its value in Rotate.Column beside the
	// current one, lookups keep using Column, and `kmspostgres reindex
	// -rotate` fills it for older rows. Then the map is switched to it.
	Rotate *BlindIndexRotation

	normalize blindindex.Normalizer // resolved by Validate
}

// BlindIndexRotation is the next index of a column (BlindIndex.Rotate).
// Its values are those the rotated map, with Column, Algorithm,
// Expression (or Normalize) and MasterKeyEnv as the current index, will
// compute: switching the map to it needs no reindex.
type BlindIndexRotation struct {
	// Column is the new index column (required); text or bytea, as
	// BlindIndex.Column. Its name is part of the per-index key.
	Column string
	// Algorithm defaults to the current index's.
	Algorithm blindindex.Algorithm
	// Expression defaults to the current index's (with its normalizer,
	// Go or not, when Normalize is unset too); "none" rotates to no
	// normalization.
	Expression string
	// Normalize, when set (in Go only), is used instead of Expression.
	Normalize func(string) string
	// MasterKeyEnv names the environment variable of the new master key
	// (64 hex characters); default the current index's master key.
	MasterKeyEnv string

	normalize blindindex.Normalizer // resolved by Validate
	inherit   bool                  // normalize as the current index does
}

type yamlBlindIndex struct {
	Column       string             `yaml:"column"`
	Algorithm    string             `yaml:"algorithm"`
	Expression   string             `yaml:"expression"`
	KeyOf        string             `yaml:"key_of"`
	MasterKeyEnv string             `yaml:"master_key_env"`
	Rotate       *yamlBlindRotation `yaml:"rotate"`
}

type yamlBlindRotation struct {
	Column       string `yaml:"column"`
	Algorithm    string `yaml:"algorithm"`
	Expression   string `yaml:"expression"`
	MasterKeyEnv string `yaml:"master_key_env"`
}

// blindIndexFromYAML converts the map's blind_index entry.
func blindIndexFromYAML(y *yamlBlindIndex) (*BlindIndex, error) {
	if y == nil {
		return nil, nil
	}
	b := &BlindIndex{Column: y.Column, Expression: y.Expression, KeyOf: y.KeyOf, MasterKeyEnv: y.MasterKeyEnv}
	if y.Algorithm != "" {
		a, err := blindindex.ParseAlgorithm(y.Algorithm)
		if err != nil {
			return nil, err
		}
		b.Algorithm = a
	}
	if r := y.Rotate; r != nil {
		b.Rotate = &BlindIndexRotation{Column: r.Column, Expression: r.Expression, MasterKeyEnv: r.MasterKeyEnv}
		if r.Algorithm != "" {
			a, err := blindindex.ParseAlgorithm(r.Algorithm)
			if err != nil {
				return nil, fmt.Errorf("blind_index rotate: %w", err)
			}
			b.Rotate.Algorithm = a
		}
	}
	return b, nil
}

// validateBlindIndex checks a column's blind index and fills in its
// defaults: the index column, the algorithm and the normalizer.
func (s *Schema) validateBlindIndex(t *Table, c *Column, pk map[string]bool, keyCols map[string]string) error {
	b := c.BlindIndex
	if b == nil {
		return nil
	}
	tn, cn := t.Name, c.Name
	if c.Type != envelope.Text {
		return s.invalid("table %s, column %s: blind_index works on text columns only (this one is %v)", tn, cn, c.Type)
	}
	if b.Column == "" {
		b.Column = cn + "_bidx"
	}
	if err := s.checkIndexColumn(t, c, pk, keyCols, "blind_index column", b.Column); err != nil {
		return err
	}
	if b.Algorithm == 0 {
		b.Algorithm = blindindex.Argon2id
	}
	if b.Algorithm != blindindex.Argon2id && b.Algorithm != blindindex.HMACSHA256 {
		return s.invalid("table %s, column %s: blind_index algorithm %v: use argon2id or hmac_sha256", tn, cn, b.Algorithm)
	}
	if b.MasterKeyEnv != "" && !envNameRe.MatchString(b.MasterKeyEnv) {
		return s.invalid("table %s, column %s: blind_index master_key_env %q is not an environment variable name", tn, cn, b.MasterKeyEnv)
	}
	if b.Normalize != nil {
		b.normalize = b.Normalize
	} else {
		n, err := blindindex.ParseExpression(b.Expression)
		if err != nil {
			return s.invalid("table %s, column %s: %v", tn, cn, err)
		}
		b.normalize = n
	}
	return s.validateRotation(t, c, pk, keyCols)
}

var envNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// checkIndexColumn checks that an index column (what names it) is a plain
// identifier that is no primary-key, key or encrypted column, nor the
// index or rotation column of another index of the table.
func (s *Schema) checkIndexColumn(t *Table, c *Column, pk map[string]bool, keyCols map[string]string, what, col string) error {
	tn, cn := t.Name, c.Name
	if !identRe.MatchString(col) {
		return s.invalid("table %s, column %s: %s %q is not a plain SQL identifier", tn, cn, what, col)
	}
	switch {
	case pk[col]:
		return s.invalid("table %s, column %s: %s %s is a primary-key column; name a column of its own", tn, cn, what, col)
	case keyCols[col] != "":
		return s.invalid("table %s, column %s: %s %s is a key column; name a column of its own", tn, cn, what, col)
	case t.Columns[col] != nil:
		return s.invalid("table %s, column %s: %s %s is an encrypted column; name a column of its own", tn, cn, what, col)
	}
	if b := c.BlindIndex; b.Rotate != nil && b.Column == b.Rotate.Column {
		return s.invalid("table %s, column %s: blind_index rotate column %s is the current index column; name the new column", tn, cn, col)
	}
	for _, on := range slices.Sorted(maps.Keys(t.Columns)) {
		other := t.Columns[on]
		if other == nil || other == c || other.BlindIndex == nil {
			continue
		}
		if ob := other.BlindIndex; ob.Column == col || ob.Rotate != nil && ob.Rotate.Column == col {
			return s.invalid("table %s: columns %s and %s share the blind_index column %s; give each index a column of its own", tn, min(cn, on), max(cn, on), col)
		}
	}
	return nil
}

// validateRotation checks a blind index's rotation and fills in its
// defaults from the current index.
func (s *Schema) validateRotation(t *Table, c *Column, pk map[string]bool, keyCols map[string]string) error {
	b := c.BlindIndex
	r := b.Rotate
	if r == nil {
		return nil
	}
	tn, cn := t.Name, c.Name
	if r.Column == "" {
		return s.invalid("table %s, column %s: blind_index rotate needs a column (the new index column, such as %s_v2)", tn, cn, b.Column)
	}
	if err := s.checkIndexColumn(t, c, pk, keyCols, "blind_index rotate column", r.Column); err != nil {
		return err
	}
	if r.Algorithm == 0 {
		r.Algorithm = b.Algorithm
	}
	if r.Algorithm != blindindex.Argon2id && r.Algorithm != blindindex.HMACSHA256 {
		return s.invalid("table %s, column %s: blind_index rotate algorithm %v: use argon2id or hmac_sha256", tn, cn, r.Algorithm)
	}
	if r.MasterKeyEnv == "" {
		r.MasterKeyEnv = b.MasterKeyEnv
	}
	if r.MasterKeyEnv != "" && !envNameRe.MatchString(r.MasterKeyEnv) {
		return s.invalid("table %s, column %s: blind_index rotate master_key_env %q is not an environment variable name", tn, cn, r.MasterKeyEnv)
	}
	switch {
	case r.Normalize != nil:
		r.normalize = r.Normalize
	case r.Expression == "":
		r.Expression, r.inherit = b.Expression, true
	default:
		n, err := blindindex.ParseExpression(r.Expression)
		if err != nil {
			return s.invalid("table %s, column %s: blind_index rotate: %v", tn, cn, err)
		}
		r.normalize = n
	}
	return nil
}

// WithBlindIndexNormalizer normalizes the values of the blind index of
// table.column (as written in the schema map) with f instead of the map's
// expression, before indexing and before lookups: for normalizations the
// map cannot name (Unicode case folding, stripping phone-number
// punctuation). f must be deterministic; changing it means rebuilding the
// index.
func WithBlindIndexNormalizer(table, column string, f func(string) string) Option {
	return connectorOption(func(c *connectorConfig) {
		if c.normalize == nil {
			c.normalize = map[[2]string]func(string) string{}
		}
		c.normalize[[2]string{table, column}] = f
	})
}

// WithBlindIndexRotationNormalizer is WithBlindIndexNormalizer for the
// rotation of table.column's index (blind_index rotate): the new index
// normalizes with f, the current one as before.
func WithBlindIndexRotationNormalizer(table, column string, f func(string) string) Option {
	return connectorOption(func(c *connectorConfig) {
		if c.rotateNormalize == nil {
			c.rotateNormalize = map[[2]string]func(string) string{}
		}
		c.rotateNormalize[[2]string{table, column}] = f
	})
}

// blindIndexes are a connector's per-index keys, by table and column.
type blindIndexes map[blindKey]*blindindex.Index

// blindKey names a blind index: the current one of table.column, or with
// rotate its rotation.
type blindKey struct {
	table, column string
	rotate        bool
}

// WrappedMasterKey is a blind-index master key wrapped by the KMS and
// stored in the schema map (blind_index_master_key), instead of
// BLIND_INDEX_MASTER_KEY in the environment. Each connector unwraps it
// once, at its first connection, through the same provider and observers
// as data keys: the unwrap is audited, and cutting the KMS access cuts
// new connectors off. Make one with NewWrappedMasterKey.
type WrappedMasterKey struct {
	// Wrapped is the key as "v1:<base64>", as key columns hold data keys.
	Wrapped string
	// KeyID of the master key that wrapped it, default the map's key_id.
	KeyID string
}

type yamlWrappedMasterKey struct {
	Wrapped string `yaml:"wrapped"`
	KeyID   string `yaml:"key_id"`
}

// masterKeyContext is the encryption context of a wrapped blind-index
// master key.
var masterKeyContext = envelope.Context{"purpose": "kmspostgres blind index master key"}

// NewWrappedMasterKey makes a random blind-index master key and wraps it
// under keyID, for the schema map's blind_index_master_key. Options:
// WithProvider, WithObserver.
func NewWrappedMasterKey(ctx context.Context, keyID string, opts ...CommonOption) (*WrappedMasterKey, error) {
	var cc connectorConfig
	for _, o := range opts {
		o.applyConnector(&cc)
	}
	k, err := envelope.NewDataKey()
	if err != nil {
		return nil, err
	}
	w, err := newKeyring(cc.kms).wrap(ctx, keyID, 1, masterKeyContext, k)
	if err != nil {
		return nil, err
	}
	return &WrappedMasterKey{Wrapped: w, KeyID: keyID}, nil
}

// validateMasterKey checks the map's wrapped master key and fills in its
// key id.
func (s *Schema) validateMasterKey() error {
	w := s.BlindIndexMasterKey
	if w == nil {
		return nil
	}
	if _, err := envelope.ParseWrappedKey(w.Wrapped); err != nil {
		return s.invalid("blind_index_master_key: %v", err)
	}
	if w.KeyID == "" {
		w.KeyID = s.KeyID
	}
	if w.KeyID == "" {
		return s.invalid("blind_index_master_key: empty key id; set key_id")
	}
	return nil
}

// hasBlindIndex reports whether any column of the map has a blind index.
func (s *Schema) hasBlindIndex() bool {
	for _, t := range s.Tables {
		for _, c := range t.Columns {
			if c != nil && c.BlindIndex != nil {
				return true
			}
		}
	}
	return false
}

// newBlindIndexes applies the Go normalizers and derives the key of every
// blind index in the map from the master key in BLIND_INDEX_MASTER_KEY.
// With a wrapped master key in the map it returns nil: the connector
// unwraps it at its first connection (loadBlind). A map without blind
// indexes needs no master key.
func newBlindIndexes(s *Schema, normalize, rotateNormalize map[[2]string]func(string) string) (blindIndexes, error) {
	for _, rotate := range []bool{false, true} {
		m, opt := normalize, "WithBlindIndexNormalizer"
		if rotate {
			m, opt = rotateNormalize, "WithBlindIndexRotationNormalizer"
		}
		for _, tc := range slices.SortedFunc(maps.Keys(m), func(a, b [2]string) int { return strings.Compare(a[0]+"."+a[1], b[0]+"."+b[1]) }) {
			t := s.Tables[tc[0]]
			if t == nil || t.Columns[tc[1]] == nil || t.Columns[tc[1]].BlindIndex == nil {
				return nil, fmt.Errorf("%w: %s(%q, %q): the schema map has no blind index there", ErrSchema, opt, tc[0], tc[1])
			}
			b := t.Columns[tc[1]].BlindIndex
			if b.KeyOf != "" || s.keyOwned(tc[0]+"."+tc[1]) {
				return nil, fmt.Errorf("%w: %s(%q, %q): the index shares its key with another (key_of), whose values must be normalized alike; a Go normalizer is not allowed there", ErrSchema, opt, tc[0], tc[1])
			}
			if !rotate {
				b.normalize = m[tc]
				continue
			}
			if b.Rotate == nil {
				return nil, fmt.Errorf("%w: %s(%q, %q): the index has no rotate", ErrSchema, opt, tc[0], tc[1])
			}
			b.Rotate.normalize, b.Rotate.inherit = m[tc], false
		}
	}
	if !s.hasBlindIndex() {
		return blindIndexes{}, nil
	}
	if !s.usesDefaultMaster() {
		return indexesFrom(s, nil)
	}
	if s.BlindIndexMasterKey != nil {
		return nil, nil
	}
	k, ok, err := blindindex.MasterKeyFromEnv()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSchema, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: the map has blind indexes but %s is not set; set it to 64 hex characters (the blind_index gem's BLIND_INDEX_MASTER_KEY), or put a KMS-wrapped key in blind_index_master_key", ErrSchema, blindindex.EnvMasterKey)
	}
	return indexesFrom(s, &k)
}

// indexesFrom derives every index key of the map from master (nil: the
// map names no index that uses the connector's master key), and each
// index's with master_key_env from that variable.
func indexesFrom(s *Schema, master *blindindex.MasterKey) (blindIndexes, error) {
	out := blindIndexes{}
	for _, tn := range slices.Sorted(maps.Keys(s.Tables)) {
		t := s.Tables[tn]
		for _, cn := range slices.Sorted(maps.Keys(t.Columns)) {
			b := t.Columns[cn].BlindIndex
			if b == nil {
				continue
			}
			owner := b // the index whose table, column and master key make the key
			ownerTable := tn
			if b.KeyOf != "" {
				ot, oc, _ := s.keyOwner(b.KeyOf)
				owner, ownerTable = oc.BlindIndex, ot.Name
			}
			ix, err := newIndex(master, ownerTable, owner.Column, owner.MasterKeyEnv, b.Algorithm, b.normalize)
			if err != nil {
				return nil, fmt.Errorf("%w: table %s, column %s: %w", ErrSchema, tn, cn, err)
			}
			out[blindKey{tn, cn, false}] = ix
			r := b.Rotate
			if r == nil {
				continue
			}
			n := r.normalize
			if r.inherit {
				n = b.normalize
			}
			or := owner.Rotate // validated: an owner of key_of rotates with it
			if ix, err = newIndex(master, ownerTable, or.Column, or.MasterKeyEnv, r.Algorithm, n); err != nil {
				return nil, fmt.Errorf("%w: table %s, column %s: blind_index rotate: %w", ErrSchema, tn, cn, err)
			}
			out[blindKey{tn, cn, true}] = ix
		}
	}
	return out, nil
}

// newIndex derives the index of column of table from master, or from the
// master key in the environment variable env.
func newIndex(master *blindindex.MasterKey, table, column, env string, a blindindex.Algorithm, n blindindex.Normalizer) (*blindindex.Index, error) {
	var m blindindex.MasterKey
	switch {
	case env != "":
		v := os.Getenv(env)
		if v == "" {
			return nil, fmt.Errorf("master_key_env %s is not set; set it to the index's master key, 64 hex characters", env)
		}
		k, err := blindindex.ParseMasterKey(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", env, err)
		}
		m = k
	case master == nil:
		return nil, fmt.Errorf("internal: no master key")
	default:
		m = *master
	}
	key, err := m.IndexKey(table, column)
	if err != nil {
		return nil, err
	}
	return blindindex.New(key, a, n)
}

// usesDefaultMaster reports whether an index of the map (current or
// rotation) takes its key from the connector's master key rather than a
// master_key_env.
func (s *Schema) usesDefaultMaster() bool {
	for _, t := range s.Tables {
		for _, c := range t.Columns {
			if c == nil || c.BlindIndex == nil {
				continue
			}
			if b := c.BlindIndex; b.MasterKeyEnv == "" || b.Rotate != nil && b.Rotate.MasterKeyEnv == "" {
				return true
			}
		}
	}
	return false
}

// loadBlind unwraps the map's wrapped master key, once per connector, and
// derives the index keys. A failure is returned (and retried at the next
// connection).
func (c *Connector) loadBlind(ctx context.Context) error {
	c.blindMu.Lock()
	defer c.blindMu.Unlock()
	if c.blind != nil {
		return nil
	}
	w := c.schema.BlindIndexMasterKey
	wk, err := envelope.ParseWrappedKey(w.Wrapped)
	if err != nil {
		return fmt.Errorf("%w: blind_index_master_key: %w", ErrSchema, err)
	}
	k, err := c.keyring.unwrap(ctx, w.KeyID, wk.Version, masterKeyContext, wk.Ciphertext)
	if err != nil {
		return fmt.Errorf("kmspostgres: unwrapping the blind-index master key: %w", err)
	}
	if len(k) != blindindex.KeySize {
		return fmt.Errorf("%w: the blind-index master key is %d bytes, not %d", ErrDecrypt, len(k), blindindex.KeySize)
	}
	mk := blindindex.MasterKey(k)
	ix, err := indexesFrom(c.schema, &mk)
	if err != nil {
		return err
	}
	c.blind = ix
	return nil
}

// checkBlindIndexes checks the index columns of a relation's blind indexes
// and of their rotations (they exist, are text or bytea, have no default)
// and records them for the rewriter.
func (c *catalog) checkBlindIndexes(t *rewrite.Table, entry *Table, attrs map[string]attr) error {
	for _, cn := range slices.Sorted(maps.Keys(entry.Columns)) {
		b := entry.Columns[cn].BlindIndex
		if b == nil {
			continue
		}
		bytea, err := c.checkIndexColumn(t, attrs, cn, b.Column)
		if err != nil {
			return err
		}
		if t.Blind == nil {
			t.Blind = map[string]rewrite.BlindIndex{}
		}
		key := t.Name + "." + cn
		if b.KeyOf != "" {
			key = b.KeyOf
		}
		bi := rewrite.BlindIndex{Column: b.Column, Bytea: bytea, Key: key}
		if b.Rotate != nil {
			if bi.RotateBytea, err = c.checkIndexColumn(t, attrs, cn, b.Rotate.Column); err != nil {
				return err
			}
			bi.Rotate = b.Rotate.Column
		}
		t.Blind[cn] = bi
	}
	return nil
}

// checkIndexColumn checks one index column of column cn and says whether
// it is bytea.
func (c *catalog) checkIndexColumn(t *rewrite.Table, attrs map[string]attr, cn, col string) (bool, error) {
	a, ok := attrs[col]
	if !ok {
		return false, c.mismatch(t.Name, "blind-index column %s (of %s) does not exist; add it: ALTER TABLE %s ADD COLUMN %s text (and CREATE UNIQUE INDEX ON %s (%s) if values are unique)", col, cn, t.Name, col, t.Name, col)
	}
	switch a.typ {
	case "text", "character varying":
	case "bytea":
		return true, checkNoDefault(c, t, a, col)
	default:
		return false, c.mismatch(t.Name, "blind-index column %s is %s; it must be text (base64) or bytea (raw)", col, a.typ)
	}
	return false, checkNoDefault(c, t, a, col)
}

func checkNoDefault(c *catalog, t *rewrite.Table, a attr, col string) error {
	if a.hasDef {
		return c.mismatch(t.Name, "blind-index column %s has a default or is generated; drop it, the driver writes blind-index columns", col)
	}
	return nil
}

// index returns the blind index of table.column.
func (c *Connector) index(t *rewrite.Table, column string) (*blindindex.Index, error) {
	return c.indexOf(t, column, false)
}

// indexOf returns the blind index of table.column, or with rotate its
// rotation.
func (c *Connector) indexOf(t *rewrite.Table, column string, rotate bool) (*blindindex.Index, error) {
	ix := c.blind[blindKey{t.Name, column, rotate}]
	if ix == nil {
		return nil, fmt.Errorf("kmspostgres: %s.%s: no blind index key (the schema map changed under the plan)", t.Name, column)
	}
	return ix, nil
}

// indexValue computes the stored index value of one plaintext value: nil
// (NULL) stays nil; text index columns get base64, bytea columns raw
// bytes. The value is encoded as the cell's plaintext is, so that writes
// and lookups agree.
func (c *Connector) indexValue(t *rewrite.Table, column string, v any) (any, error) {
	return c.storedIndex(t, column, false, v)
}

// storedIndex is indexValue for the current index or, with rotate, for
// its rotation (stored in BlindIndex.Rotate).
func (c *Connector) storedIndex(t *rewrite.Table, column string, rotate bool, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	ix, err := c.indexOf(t, column, rotate)
	if err != nil {
		return nil, err
	}
	pt, err := envelope.Text.Encode(v)
	if err != nil {
		return nil, &CellError{Table: t.Name, Column: column, Err: err}
	}
	bi := t.Blind[column]
	if bi.Bytea && !rotate || bi.RotateBytea && rotate {
		return ix.Sum(pt), nil
	}
	return ix.Text(pt), nil
}

// indexCells fills the slots of the index values a statement writes, of
// the current indexes or, with rotate, of their rotations.
func (c *Connector) indexCells(t *rewrite.Table, cells []rewrite.Cell, rotate bool, args []driver.NamedValue, slots []any) error {
	for _, cell := range cells {
		v, err := valueOf(cell.Value, args)
		if err != nil {
			return err
		}
		if slots[cell.Slot], err = c.storedIndex(t, cell.Column, rotate, v); err != nil {
			return err
		}
	}
	return nil
}

// lookupElems returns a lookup's operand, or each element of an array
// operand, NULL elements included (nil); whole says the operand itself is
// NULL.
func lookupElems(l rewrite.Lookup, args []driver.NamedValue) (elems []any, whole bool, err error) {
	v, err := valueOf(l.Value, args)
	if err != nil || v == nil {
		return nil, err == nil, err
	}
	if !l.Array {
		return []any{v}, false, nil
	}
	if b, ok := v.([]byte); ok {
		v = string(b)
	}
	switch a := v.(type) { // pgx sends a nil slice as NULL
	case []string:
		if a == nil {
			return nil, true, nil
		}
	case []*string:
		if a == nil {
			return nil, true, nil
		}
	case []any:
		if a == nil {
			return nil, true, nil
		}
	}
	ops := []any{}
	add := func(e any) { ops = append(ops, e) }
	switch a := v.(type) {
	case string: // an array in PostgreSQL's text form, as pq.Array gives it
		elems, err := parseTextArray(a)
		if err != nil {
			return nil, false, &rewrite.RefusalError{Table: l.Table.Name, Column: l.Column, Reason: "= ANY on a blind-indexed column: " + err.Error(), Fix: "pass a []string or pq.Array of one"}
		}
		for _, s := range elems {
			if s == nil {
				add(nil)
			} else {
				add(*s)
			}
		}
	case []string:
		for _, s := range a {
			add(s)
		}
	case []*string:
		for _, s := range a {
			if s == nil {
				add(nil)
			} else {
				add(*s)
			}
		}
	case []any:
		for _, s := range a {
			r, err := resolveValue(s)
			if err != nil {
				return nil, false, err
			}
			add(r)
		}
	default:
		return nil, false, &rewrite.RefusalError{Table: l.Table.Name, Column: l.Column, Reason: fmt.Sprintf("= ANY on a blind-indexed column takes a []string, not %T", v), Fix: "pass the values as a []string"}
	}
	return ops, false, nil
}

// lookups computes the index values a plan compares with.
func (c *Connector) lookups(p *rewrite.Plan, args []driver.NamedValue) ([]any, error) {
	if len(p.Lookups) == 0 {
		return nil, nil
	}
	out := make([]any, len(p.Lookups))
	for i, l := range p.Lookups {
		if l.Verified != 0 {
			continue // filled by the prechecks
		}
		elems, whole, err := lookupElems(l, args)
		if err != nil {
			return nil, err
		}
		if !l.Array {
			if len(elems) == 1 {
				out[i], err = c.indexValue(l.Table, l.Column, elems[0])
			}
			if err != nil {
				return nil, err
			}
			continue
		}
		// The array the server compares with has the query's NULLs where
		// the query has them, and is NULL when the query's is: = ANY and
		// <> ALL then answer as they would on the values.
		bytea := l.Table.Blind[l.Column].Bytea
		if whole {
			continue // NULL
		}
		texts, raws := make([]*string, len(elems)), make([][]byte, len(elems))
		for j, e := range elems {
			if e == nil {
				continue
			}
			iv, err := c.indexValue(l.Table, l.Column, e)
			if err != nil {
				return nil, err
			}
			if bytea {
				raws[j] = iv.([]byte)
			} else {
				s := iv.(string)
				texts[j] = &s
			}
		}
		if bytea {
			out[i] = raws
		} else {
			out[i] = texts
		}
	}
	return out, nil
}

// ErrBlindIndexMismatch reports a result row whose blind-index value
// matched the query but whose decrypted value does not: the index column
// was written by something other than the driver (copied from another
// row, say). The statement fails rather than return the row. It wraps
// ErrDecrypt; use errors.Is.
var ErrBlindIndexMismatch = fmt.Errorf("%w: a row's blind index does not match its value (was the index column written past the driver?)", ErrDecrypt)

// checkOperand is what a blind-index check compares a row's decrypted
// value with: the query's operands normalized by the column's index,
// whether a NULL is among them, and whether they are an empty array (an
// = ANY or <> ALL of no elements, whose value does not depend on the row).
type checkOperand struct {
	values []string
	null   bool
	empty  bool
}

// blindChecks holds the operands of each check of a result.
type blindChecks []checkOperand

// attachChecks gives a result set the operands of its plan's checks.
func (c *Conn) attachChecks(dr driver.Rows, p *rewrite.Plan, args []driver.NamedValue) error {
	r, ok := dr.(*rows)
	if !ok || p.Out == nil || len(p.Out.Checks) == 0 {
		return nil
	}
	var err error
	r.checks, err = c.connector.checkOperands(p, p.Out.Checks, args)
	return err
}

// checkOperands returns the operands of each check.
func (c *Connector) checkOperands(p *rewrite.Plan, checks []rewrite.Check, args []driver.NamedValue) (blindChecks, error) {
	out := make(blindChecks, len(checks))
	for i, ch := range checks {
		op := &out[i]
		op.null = ch.NullOperand
		if len(ch.Lookups) == 0 {
			continue
		}
		ix, err := c.index(ch.Table, ch.Column)
		if err != nil {
			return nil, err
		}
		for _, li := range ch.Lookups {
			l := p.Lookups[li]
			elems, whole, err := lookupElems(l, args)
			if err != nil {
				return nil, err
			}
			op.empty = ch.Cond && len(ch.Lookups) == 1 && l.Array && !whole && len(elems) == 0
			op.null = op.null || whole
			for _, e := range elems {
				if e == nil {
					op.null = true
					continue
				}
				pt, err := envelope.Text.Encode(e)
				if err != nil {
					return nil, &CellError{Table: ch.Table.Name, Column: ch.Column, Err: err}
				}
				op.values = append(op.values, ix.Normalize(string(pt)))
			}
		}
	}
	return out, nil
}

// verify decrypts, for every row of the window, the columns the plan's
// checks name and fails the result set on a row whose value is not among
// the query's operands: its index value was not computed from its value.
func (r *rows) verify(w *windowKeys) error {
	if len(r.out.Checks) == 0 {
		return nil
	}
	if r.checks == nil {
		return fmt.Errorf("kmspostgres: internal: blind-index checks without operands; refusing the result")
	}
	for ri := range r.buf {
		for ci, ch := range r.out.Checks {
			if err := r.verifyCheck(w, ri, ci, ch); err != nil {
				return err
			}
		}
	}
	return nil
}

// verifyCheck checks one check of one row. A top-level equality must
// hold on the decrypted value (NULL matches no equality). A comparison
// under OR or NOT, or in a join (Cond), must have, on the server, the
// value PostgreSQL computes on the decrypted values: true, false or NULL.
// Either way a row whose index value was copied from another row fails.
func (r *rows) verifyCheck(w *windowKeys, ri, ci int, ch rewrite.Check) error {
	row := r.buf[ri]
	var server any
	if ch.Cond {
		server = row[ch.CondAt]
		row[ch.CondAt] = nil
	}
	var in, null bool
	var s string
	var err error
	if ch.Visible {
		s, null, err = r.visibleValue(ri, ch)
	} else {
		s, null, err = r.checkValue(w, ri, ch.Source, ch.At, ch.Column)
	}
	if err == nil && ch.Pair {
		var ps string
		var pnull bool
		ps, pnull, err = r.checkValue(w, ri, ch.PairSource, ch.PairAt, ch.PairColumn)
		in, null = s == ps, null || pnull
	} else if err == nil && !null {
		in = slices.Contains(r.checks[ci].values, s)
	}
	if err != nil {
		return err
	}
	ok, err := checkAgrees(ch, in, null, r.checks[ci], server)
	if err != nil || ok {
		return err
	}
	return cellError(w.infos[ch.Source], ch.Column, w.pks[ri][ch.Source], ErrBlindIndexMismatch)
}

// checkAgrees decides a blind-index check from the decrypted values: in,
// the value is among the operands (or, for a pair, the two values are
// equal); null, a value is NULL; op, the operands; server, the server's
// value of the comparison (a bool or nil), read when ch.Cond. It computes
// the comparison as PostgreSQL does and says whether the server agrees.
func checkAgrees(ch rewrite.Check, in, null bool, op checkOperand, server any) (bool, error) {
	if !ch.Cond {
		return in, nil
	}
	b, isBool := server.(bool)
	serverNull := server == nil
	if !isBool && !serverNull {
		return false, fmt.Errorf("kmspostgres: internal: a blind-index condition read as %T; refusing the result", server)
	}
	switch {
	case op.empty: // = ANY('{}') is false and <> ALL('{}') true, even for NULL
		return !serverNull && b == ch.Negated, nil
	case null: // a NULL value compares as NULL
		return serverNull, nil
	case in: // as PostgreSQL: a match decides…
		return !serverNull && b != ch.Negated, nil
	case op.null: // …otherwise a NULL operand makes it NULL
		return serverNull, nil
	default:
		return !serverNull && b == ch.Negated, nil
	}
}

// visibleValue returns the decrypted value of a result column a check
// compares (Check.Visible), normalized by the column's index, or that it
// is NULL.
func (r *rows) visibleValue(ri int, ch rewrite.Check) (string, bool, error) {
	switch v := r.buf[ri][ch.At].(type) {
	case nil:
		return "", true, nil
	case string:
		ix, err := r.c.connector.index(ch.Table, ch.Column)
		if err != nil {
			return "", false, err
		}
		return ix.Normalize(v), false, nil
	default:
		return "", false, fmt.Errorf("kmspostgres: internal: %s.%s was decrypted as %T for its blind-index check; refusing the result", ch.Table.Name, ch.Column, v)
	}
}

// checkValue decrypts the cell a check reads at position at of a row,
// with the row key of source, and returns it normalized by the column's
// index, or that it is NULL. The plaintext is not kept in the row.
func (r *rows) checkValue(w *windowKeys, ri, source, at int, column string) (string, bool, error) {
	row := r.buf[ri]
	ti := w.infos[source]
	pk := w.pks[ri][source]
	id := w.ids[ri][source]
	cell := row[at]
	row[at] = nil // no plaintext kept beyond the check
	if cell == nil || id == (rowKeyID{}) {
		return "", true, nil
	}
	ck := r.keys[id]
	if ck == nil {
		return "", false, cellError(ti, column, pk, w.pending[id].err)
	}
	s, err := r.c.connector.normalizedCell(ti, column, nil, ck, pk, cell)
	return s, false, err
}

// normalizedCell opens a blind-indexed cell with its row's cell key and
// returns its value normalized by the column's index, for a check.
func (c *Connector) normalizedCell(ti *tableInfo, col string, ix *blindindex.Index, ck *envelope.CellKey, pk []string, cell any) (string, error) {
	v, err := openCell(ti, col, ti.aad(col), ck, cell)
	if err != nil {
		return "", cellError(ti, col, pk, err)
	}
	if ix == nil {
		if ix, err = c.index(ti.table, col); err != nil {
			return "", err
		}
	}
	s, _ := v.(string)
	return ix.Normalize(s), nil
}

// checkKey unwraps a row's key for a blind-index check; what says what
// the check is for, when the key cannot be unwrapped for want of rights.
func (c *Conn) checkKey(ctx context.Context, ti *tableInfo, key int, pk []string, wrapped, what string) (*envelope.CellKey, error) {
	rk, err := c.openKey(ctx, ti, key, pk, wrapped)
	if errors.Is(err, ErrPermission) {
		err = fmt.Errorf("%w (%s needs decrypt rights)", err, what)
	}
	if err != nil {
		return nil, err
	}
	return rk.ck, nil
}

// parseTextArray parses a one-dimensional array in PostgreSQL's text
// form: {a,"b c",NULL,"d\"e"}. NULL elements come back nil.
func parseTextArray(s string) ([]*string, error) {
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return nil, fmt.Errorf("the array is not in {…} form")
	}
	body := s[1 : len(s)-1]
	var out []*string
	if strings.TrimSpace(body) == "" {
		return out, nil
	}
	for i := 0; ; {
		for i < len(body) && body[i] == ' ' {
			i++
		}
		var b strings.Builder
		quoted := i < len(body) && body[i] == '"'
		if quoted {
			i++
			for ; i < len(body) && body[i] != '"'; i++ {
				if body[i] == '\\' && i+1 < len(body) {
					i++
				}
				b.WriteByte(body[i])
			}
			if i >= len(body) {
				return nil, fmt.Errorf("unterminated quoted element")
			}
			i++
		} else {
			for ; i < len(body) && body[i] != ','; i++ {
				if body[i] == '{' || body[i] == '"' || body[i] == '\\' {
					return nil, fmt.Errorf("only one-dimensional arrays of plain or quoted elements are read")
				}
				b.WriteByte(body[i])
			}
		}
		e := b.String()
		if !quoted {
			e = strings.TrimSpace(e)
		}
		if !quoted && strings.EqualFold(e, "NULL") {
			out = append(out, nil)
		} else {
			out = append(out, &e)
		}
		for i < len(body) && body[i] == ' ' {
			i++
		}
		if i == len(body) {
			return out, nil
		}
		if body[i] != ',' {
			return nil, fmt.Errorf("unexpected %q after an element", body[i])
		}
		i++
	}
}

// UniqueError reports that a statement would store, in an encrypted
// column with a UNIQUE index on its blind index, a value another row
// already holds. Unwrap returns the server's *pgconn.PgError (whose detail
// shows the index value, never the plaintext).
type UniqueError struct {
	Table, Column string // the encrypted column, as in the schema map
	Index         string // the unique index or constraint
	Err           error
}

func (e *UniqueError) Error() string {
	return "kmspostgres: " + e.Table + "." + e.Column + ": another row already holds this value (unique index " + e.Index + " on its blind index)"
}

func (e *UniqueError) Unwrap() error { return e.Err }

// uniqueError names the encrypted column behind a unique violation on a
// blind-index column, or returns pe as it is.
func (c *Connector) uniqueError(pe *pgconn.PgError) error {
	col, ok := strings.CutPrefix(pe.Detail, "Key (")
	if !ok {
		return pe
	}
	col, _, ok = strings.Cut(col, ")=(")
	if !ok {
		return pe
	}
	for _, tn := range slices.Sorted(maps.Keys(c.schema.Tables)) {
		t := c.schema.Tables[tn]
		if !strings.EqualFold(tn, pe.TableName) && !strings.HasSuffix(strings.ToLower(tn), "."+strings.ToLower(pe.TableName)) {
			continue
		}
		for _, cn := range slices.Sorted(maps.Keys(t.Columns)) {
			if b := t.Columns[cn].BlindIndex; b != nil && (b.Column == col || b.Rotate != nil && b.Rotate.Column == col) {
				return &UniqueError{Table: tn, Column: cn, Index: pe.ConstraintName, Err: pe}
			}
		}
	}
	return pe
}

// checkCell is what an UPDATE's row finder reads for one blind-index
// check: the row's key column and the stored cell.
type checkCell struct {
	key  *string
	cell any
	cond any // the server's value of a Cond check: a bool or nil
}

// checkDest lists the scan destinations of a row's checks, in the order
// the row finder reads them.
func checkDest(dest []any, cells []checkCell, checks []rewrite.Check) []any {
	for i := range cells {
		dest = append(dest, &cells[i].key, &cells[i].cell)
		if checks[i].Cond {
			dest = append(dest, &cells[i].cond)
		}
	}
	return dest
}

// verify checks, before an UPDATE writes them, that the locked rows hold
// the values its WHERE clause's blind-index equalities name. The cell key
// is the one just unwrapped for the row when the UPDATE keeps the row's
// key, else the row's key is unwrapped for the check: a forged index value
// must not make the UPDATE write another row.
func (u *updateKeyer) verify(locked []updRow, keys map[string][]rowKey) error {
	up := u.up
	if len(up.Checks) == 0 {
		return nil
	}
	operands, err := u.c.connector.checkOperands(u.p, up.Checks, u.args)
	if err != nil {
		return err
	}
	for _, r := range locked {
		for i, ch := range up.Checks {
			cc := r.checks[i]
			bad := &CellError{Table: u.ti.table.Name, Column: ch.Column, PK: pkLabel(u.ti.table, r.pk), Err: ErrBlindIndexMismatch}
			s, null, err := u.checkValue(r, keys, ch, cc)
			if err != nil {
				return err
			}
			ok, err := checkAgrees(ch, !null && slices.Contains(operands[i].values, s), null, operands[i], cc.cond)
			if err != nil {
				return err
			}
			if !ok {
				return bad
			}
		}
	}
	return nil
}

// checkValue decrypts a locked row's cell for a check and returns it
// normalized, or that it is NULL. The cell key is the one just unwrapped
// for the row when the UPDATE keeps the row's key, else the row's key is
// unwrapped for the check. A cell without a key is a mismatch.
func (u *updateKeyer) checkValue(r updRow, keys map[string][]rowKey, ch rewrite.Check, cc checkCell) (string, bool, error) {
	if cc.cell == nil {
		return "", true, nil
	}
	if cc.key == nil {
		return "", false, &CellError{Table: u.ti.table.Name, Column: ch.Column, PK: pkLabel(u.ti.table, r.pk), Err: ErrBlindIndexMismatch}
	}
	var ck *envelope.CellKey
	for ki, k := range u.up.Keys {
		if k.Key == ch.Source && !k.Fresh && keys[r.id][ki].wrapped == *cc.key {
			ck = keys[r.id][ki].ck
		}
	}
	if ck == nil {
		var err error
		if ck, err = u.c.checkKey(u.ctx, u.ti, ch.Source, r.pk, *cc.key, "checking that the row holds the value its blind index says"); err != nil {
			return "", false, err
		}
	}
	s, err := u.c.connector.normalizedCell(u.ti, ch.Column, nil, ck, r.pk, cc.cell)
	return s, false, err
}

// prepareVerified runs a DELETE's or UPDATE's blind-index check: in a
// transaction (the caller's, or one the driver opens and finish ends), it
// reads and locks the rows the statement selects, unwraps each row's key,
// checks that its value matches the query's operands (refusing the whole
// statement on a forged index value), and restricts the statement to the
// rows read.
func (c *Conn) prepareVerified(ctx context.Context, p *rewrite.Plan, args []driver.NamedValue) (string, []driver.NamedValue, func(error) error, error) {
	finish, err := c.ensureTx(ctx)
	if err != nil {
		return "", nil, nil, err
	}
	q, a, err := c.verifyRows(ctx, p, args)
	if err != nil {
		return "", nil, nil, finish(err)
	}
	return q, a, finish, nil
}

func (c *Conn) verifyRows(ctx context.Context, p *rewrite.Plan, args []driver.NamedValue) (string, []driver.NamedValue, error) {
	v := p.Verify
	lk, err := c.planLookups(ctx, p, args)
	if err != nil {
		return "", nil, err
	}
	sargs, err := planArgs(v.SelectArgs, args, nil, lk)
	if err != nil {
		return "", nil, err
	}
	qargs := make([]any, len(sargs))
	for i, a := range sargs {
		qargs[i] = a.Value
	}
	ti := c.connector.catalog.info(v.Table)
	u := &updateKeyer{c: c, ctx: ctx, p: p, up: &rewrite.Update{Table: v.Table, Checks: v.Checks}, ti: ti, args: args}
	rows, err := c.pc.Query(ctx, v.SelectSQL, qargs...)
	if err != nil {
		return "", nil, err
	}
	npk := len(v.Table.PrimaryKey)
	locked, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (updRow, error) {
		r := updRow{pk: make([]string, npk), checks: make([]checkCell, len(v.Checks))}
		dest := []any{&r.ctid, &r.toid}
		for i := range r.pk {
			dest = append(dest, &r.pk[i])
		}
		dest = checkDest(dest, r.checks, v.Checks)
		err := row.Scan(dest...)
		r.id = strings.Join(r.pk, "\x00")
		return r, err
	})
	if err != nil {
		return "", nil, err
	}
	if err := u.verify(locked, nil); err != nil {
		return "", nil, err
	}
	slots := make([]any, v.Slots)
	ctids, toids := make([]string, len(locked)), make([]string, len(locked))
	for i, r := range locked {
		ctids[i], toids[i] = r.ctid, r.toid
	}
	slots[v.CtidSlot], slots[v.TableoidSlot] = ctids, toids
	a, err := planArgs(p.Args, args, slots, lk)
	return p.SQL, a, err
}

// keyOwner resolves a blind_index key_of reference, "table.column".
func (s *Schema) keyOwner(ref string) (*Table, *Column, bool) {
	i := strings.LastIndexByte(ref, '.')
	if i <= 0 {
		return nil, nil, false
	}
	t := s.Tables[ref[:i]]
	if t == nil {
		return nil, nil, false
	}
	c := t.Columns[ref[i+1:]]
	if c == nil || c.BlindIndex == nil {
		return nil, nil, false
	}
	return t, c, true
}

// keyOwned reports whether some index takes its key from ref
// ("table.column", key_of).
func (s *Schema) keyOwned(ref string) bool {
	for _, t := range s.Tables {
		for _, c := range t.Columns {
			if c != nil && c.BlindIndex != nil && c.BlindIndex.KeyOf == ref {
				return true
			}
		}
	}
	return false
}

// exprOf is an expression as compared: "none" is "".
func exprOf(e string) string {
	if e == "none" {
		return ""
	}
	return e
}

// validateBlindKeys checks the key_of references once every index has
// its defaults: the owner exists, has its own key, and indexes values the
// same way.
func (s *Schema) validateBlindKeys() error {
	for _, tn := range slices.Sorted(maps.Keys(s.Tables)) {
		t := s.Tables[tn]
		for _, cn := range slices.Sorted(maps.Keys(t.Columns)) {
			c := t.Columns[cn]
			if c == nil || c.BlindIndex == nil || c.BlindIndex.KeyOf == "" {
				continue
			}
			b := c.BlindIndex
			ot, oc, ok := s.keyOwner(b.KeyOf)
			switch {
			case !ok:
				return s.invalid("table %s, column %s: blind_index key_of %q names no blind-indexed column of the map (write table.column)", tn, cn, b.KeyOf)
			case ot == t && oc == c:
				return s.invalid("table %s, column %s: blind_index key_of names the column itself", tn, cn)
			case oc.BlindIndex.KeyOf != "":
				return s.invalid("table %s, column %s: blind_index key_of %s, which takes its key from %s: name %s instead", tn, cn, b.KeyOf, oc.BlindIndex.KeyOf, oc.BlindIndex.KeyOf)
			case oc.BlindIndex.Algorithm != b.Algorithm || exprOf(oc.BlindIndex.Expression) != exprOf(b.Expression) || oc.BlindIndex.Normalize != nil || b.Normalize != nil:
				return s.invalid("table %s, column %s: blind_index key_of %s needs the same algorithm and expression as %s (and no Go normalizer), or equal values would index differently", tn, cn, b.KeyOf, b.KeyOf)
			case oc.BlindIndex.MasterKeyEnv != b.MasterKeyEnv:
				return s.invalid("table %s, column %s: blind_index key_of %s takes its key from %s's master key: drop master_key_env here, or set it as on %s", tn, cn, b.KeyOf, b.KeyOf, b.KeyOf)
			}
			// The two indexes rotate together: once the maps are switched,
			// this index takes its key from the owner's new column.
			or, r := oc.BlindIndex.Rotate, b.Rotate
			switch {
			case or != nil && r == nil:
				return s.invalid("table %s, column %s: blind_index key_of %s, which is rotating to %s: add a rotate to this index too (same algorithm, expression and master key), or its values would change when the map is switched", tn, cn, b.KeyOf, or.Column)
			case or == nil && r != nil:
				return s.invalid("table %s, column %s: blind_index rotate on an index with key_of %s: rotate %s too (its rotation gives this one its key)", tn, cn, b.KeyOf, b.KeyOf)
			case r != nil && (or.Algorithm != r.Algorithm || exprOf(or.Expression) != exprOf(r.Expression) || or.Normalize != nil || r.Normalize != nil || or.MasterKeyEnv != r.MasterKeyEnv):
				return s.invalid("table %s, column %s: blind_index rotate needs the same algorithm, expression and master_key_env as the rotate of %s (key_of), and no Go normalizer", tn, cn, b.KeyOf)
			}
		}
	}
	return nil
}

// checkConflicts runs an upsert's ConflictChecks before the statement: it
// reads and locks the existing rows whose index column holds an index
// value the INSERT writes, and refuses the statement unless each holds a
// value the INSERT writes with that index value (normalized). A row whose
// index value was copied from another row would otherwise be the one the
// upsert updates and returns. The check unwraps those rows' keys, so it
// needs decrypt rights when a conflicting row exists.
func (c *Conn) checkConflicts(ctx context.Context, ip *rewrite.Insert, args []driver.NamedValue, slots []any) error {
	// The rows checked, to which the DO UPDATE is restricted.
	var read verifiedRows
	defer func() { slots[ip.CheckedCtidSlot], slots[ip.CheckedTableoidSlot] = read.ctids, read.toids }()
	for _, cc := range ip.ConflictChecks {
		ix, err := c.connector.indexOf(ip.Table, cc.Column, cc.Rotate)
		if err != nil {
			return err
		}
		want := indexedValues{}
		for _, row := range ip.Rows {
			cells := row.Indexes
			if cc.Rotate {
				cells = row.Rotations
			}
			for _, cell := range cells {
				if cell.Column != cc.Column || slots[cell.Slot] == nil {
					continue
				}
				v, err := valueOf(cell.Value, args)
				if err != nil {
					return err
				}
				if err := want.add(ix, ip.Table, cc.Column, slots[cell.Slot], v); err != nil {
					return err
				}
			}
		}
		if err := c.readIndexed(ctx, ip.Table, cc.Column, ix, cc.SelectSQL, want, "checking the row an upsert on a blind index would update", &read); err != nil {
			return err
		}
	}
	return nil
}

// runPrechecks runs a plan's Prechecks (see rewrite.Precheck): every row
// whose index column holds an index value a comparison outside the rows
// the driver reads compares with must hold that value, or the statement
// is refused with ErrBlindIndexMismatch. The row versions read become the
// values of the plan's Verified lookups, to which the comparisons are
// restricted. Like a read of the rows, it needs decrypt rights when such a
// row exists.
func (c *Conn) runPrechecks(ctx context.Context, p *rewrite.Plan, args []driver.NamedValue, lk []any) error {
	var read verifiedRows
	for _, pc := range p.Prechecks {
		ix, err := c.connector.index(pc.Table, pc.Column)
		if err != nil {
			return err
		}
		want := indexedValues{}
		for _, li := range pc.Lookups {
			l := p.Lookups[li]
			elems, _, err := lookupElems(l, args)
			if err != nil {
				return err
			}
			for j, e := range elems {
				if e == nil {
					continue
				}
				iv := lk[li]
				if l.Array {
					switch a := iv.(type) {
					case []*string:
						iv = *a[j]
					case [][]byte:
						iv = a[j]
					}
				}
				if err := want.add(ix, pc.Table, pc.Column, iv, e); err != nil {
					return err
				}
			}
		}
		if err := c.readIndexed(ctx, pc.Table, pc.Column, ix, pc.SelectSQL, want, "checking a row a blind-index comparison selects", &read); err != nil {
			return err
		}
	}
	for i, l := range p.Lookups {
		switch l.Verified {
		case rewrite.VerifiedCtids:
			lk[i] = read.ctids
		case rewrite.VerifiedTableoids:
			lk[i] = read.toids
		case rewrite.VerifiedXmins:
			lk[i] = read.xmins
		}
	}
	return nil
}

// planLookups computes the values of a plan's blind-index parameters: the
// index values of its operands and, when it has prechecks, the rows they
// verified (running them on the connection).
func (c *Conn) planLookups(ctx context.Context, p *rewrite.Plan, args []driver.NamedValue) ([]any, error) {
	lk, err := c.connector.lookups(p, args)
	if err != nil || len(p.Prechecks) == 0 {
		return lk, err
	}
	return lk, c.runPrechecks(ctx, p, args, lk)
}

// indexedValues maps an index value (as a string, raw bytes for bytea)
// to the normalized value it was computed from, and lists the index
// values in the form the column stores.
type indexedValues struct {
	want  map[string]string
	texts []string
	raws  [][]byte
}

func (w *indexedValues) add(ix *blindindex.Index, t *rewrite.Table, col string, iv, v any) error {
	pt, err := envelope.Text.Encode(v)
	if err != nil {
		return &CellError{Table: t.Name, Column: col, Err: err}
	}
	if w.want == nil {
		w.want = map[string]string{}
	}
	switch x := iv.(type) {
	case string:
		w.texts = append(w.texts, x)
		w.want[x] = ix.Normalize(string(pt))
	case []byte:
		w.raws = append(w.raws, x)
		w.want[string(x)] = ix.Normalize(string(pt))
	}
	return nil
}

// verifiedRows are row versions the driver read and checked, as text.
type verifiedRows struct {
	ctids, toids, xmins []string
}

// readIndexed runs sql (rewrite's indexedRowsSQL) with the index values
// of want and checks that each row it returns holds, decrypted and
// normalized by ix, the value its index value was computed from; the rows are
// added to read. what says why the key is unwrapped, for the audit.
func (c *Conn) readIndexed(ctx context.Context, t *rewrite.Table, col string, ix *blindindex.Index, sql string, want indexedValues, what string, read *verifiedRows) error {
	if read.ctids == nil {
		read.ctids, read.toids, read.xmins = []string{}, []string{}, []string{}
	}
	if len(want.want) == 0 {
		return nil
	}
	var arg any = want.texts
	if want.raws != nil {
		arg = want.raws
	}
	rows, err := c.pc.Query(ctx, sql, arg)
	if err != nil {
		return err
	}
	type existing struct {
		key              *string
		pk               []string
		cell             any
		idx              any
		ctid, toid, xmin string
	}
	found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (existing, error) {
		e := existing{pk: make([]string, len(t.PrimaryKey))}
		dest := []any{&e.key}
		for i := range e.pk {
			dest = append(dest, &e.pk[i])
		}
		dest = append(dest, &e.cell, &e.idx, &e.ctid, &e.toid, &e.xmin)
		return e, r.Scan(dest...)
	})
	if err != nil {
		return err
	}
	ti := c.connector.catalog.info(t)
	key := t.Encrypted[col].Key
	for _, e := range found {
		bad := &CellError{Table: t.Name, Column: col, PK: pkLabel(t, e.pk), Err: ErrBlindIndexMismatch}
		var idx string
		switch v := e.idx.(type) {
		case string:
			idx = v
		case []byte:
			idx = string(v)
		}
		expect, ok := want.want[idx]
		if !ok || e.key == nil || e.cell == nil {
			return bad
		}
		ck, err := c.checkKey(ctx, ti, key, e.pk, *e.key, what)
		if err != nil {
			return err
		}
		s, err := c.connector.normalizedCell(ti, col, ix, ck, e.pk, e.cell)
		if err != nil {
			return err
		}
		if s != expect {
			return bad
		}
		read.ctids, read.toids, read.xmins = append(read.ctids, e.ctid), append(read.toids, e.toid), append(read.xmins, e.xmin)
	}
	return nil
}
