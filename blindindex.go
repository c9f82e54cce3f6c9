package kmspostgres

import (
	"fmt"
	"maps"
	"slices"

	"github.com/kmspostgres/kmspostgres/blindindex"
	"github.com/kmspostgres/kmspostgres/envelope"
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
	// Expression names a normalizer: "", "lower", "trim", "lower_trim".
	Expression string
	// Normalize, when set (in Go only), is used instead of Expression.
	Normalize func(string) string

	normalize blindindex.Normalizer // resolved by Validate
}

type yamlBlindIndex struct {
	Column     string `yaml:"column"`
	Algorithm  string `yaml:"algorithm"`
	Expression string `yaml:"expression"`
}

// blindIndexFromYAML converts the map's blind_index entry.
func blindIndexFromYAML(y *yamlBlindIndex) (*BlindIndex, error) {
	if y == nil {
		return nil, nil
	}
	b := &BlindIndex{Column: y.Column, Expression: y.Expression}
	if y.Algorithm != "" {
		a, err := blindindex.ParseAlgorithm(y.Algorithm)
		if err != nil {
			return nil, err
		}
		b.Algorithm = a
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
	if !identRe.MatchString(b.Column) {
		return s.invalid("table %s, column %s: blind_index column %q is not a plain SQL identifier", tn, cn, b.Column)
	}
	switch {
	case pk[b.Column]:
		return s.invalid("table %s, column %s: blind_index column %s is a primary-key column", tn, cn, b.Column)
	case keyCols[b.Column] != "":
		return s.invalid("table %s, column %s: blind_index column %s is a key column", tn, cn, b.Column)
	case t.Columns[b.Column] != nil:
		return s.invalid("table %s, column %s: blind_index column %s is an encrypted column", tn, cn, b.Column)
	}
	for on, other := range t.Columns {
		if other != c && other != nil && other.BlindIndex != nil && other.BlindIndex.Column == b.Column {
			return s.invalid("table %s: columns %s and %s share the blind_index column %s", tn, min(cn, on), max(cn, on), b.Column)
		}
	}
	if b.Algorithm == 0 {
		b.Algorithm = blindindex.Argon2id
	}
	if b.Algorithm != blindindex.Argon2id && b.Algorithm != blindindex.HMACSHA256 {
		return s.invalid("table %s, column %s: blind_index algorithm %v: use argon2id or hmac_sha256", tn, cn, b.Algorithm)
	}
	if b.Normalize != nil {
		b.normalize = b.Normalize
		return nil
	}
	n, err := blindindex.ParseExpression(b.Expression)
	if err != nil {
		return s.invalid("table %s, column %s: %v", tn, cn, err)
	}
	b.normalize = n
	return nil
}

// blindIndexes are a connector's per-index keys, by table and column.
type blindIndexes map[[2]string]*blindindex.Index

// newBlindIndexes derives the key of every blind index in the map from
// the master key in BLIND_INDEX_MASTER_KEY. A map without blind indexes
// needs no master key.
func newBlindIndexes(s *Schema) (blindIndexes, error) {
	out := blindIndexes{}
	var master blindindex.MasterKey
	loaded := false
	for _, tn := range slices.Sorted(maps.Keys(s.Tables)) {
		t := s.Tables[tn]
		for _, cn := range slices.Sorted(maps.Keys(t.Columns)) {
			b := t.Columns[cn].BlindIndex
			if b == nil {
				continue
			}
			if !loaded {
				k, ok, err := blindindex.MasterKeyFromEnv()
				if err != nil {
					return nil, fmt.Errorf("%w: %w", ErrSchema, err)
				}
				if !ok {
					return nil, fmt.Errorf("%w: %s.%s has a blind_index but %s is not set; set it to 64 hex characters (the blind_index gem's BLIND_INDEX_MASTER_KEY)", ErrSchema, tn, cn, blindindex.EnvMasterKey)
				}
				master, loaded = k, true
			}
			key, err := master.IndexKey(tn, b.Column)
			if err != nil {
				return nil, err
			}
			ix, err := blindindex.New(key, b.Algorithm, b.normalize)
			if err != nil {
				return nil, err
			}
			out[[2]string{tn, cn}] = ix
		}
	}
	return out, nil
}
