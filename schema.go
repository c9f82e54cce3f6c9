package kmspostgres

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/kmspostgres/kmspostgres/envelope"
)

// Schema is the map of encrypted columns: which tables, which columns, under
// which keys. Load one from a YAML (or JSON) file with LoadSchema, or build
// one in Go and call Validate, which fills in the defaults.
type Schema struct {
	// KeyID is the default master key id. Empty means the KMS_KEY_ID
	// environment variable, read by Validate.
	KeyID string
	// Tables by name as written in the map: "users", "billing.invoices".
	Tables map[string]*Table
	// Cache, when set, turns on the data-key cache (see CacheConfig).
	Cache *CacheConfig
	// BlindIndexMasterKey, when set, is used instead of the
	// BLIND_INDEX_MASTER_KEY environment variable.
	BlindIndexMasterKey *WrappedMasterKey

	source string // the file name, for error messages
	byName map[string]*Table
}

// Table is one table with encrypted columns.
type Table struct {
	// Name as written in the map; it is also the "table" entry of the
	// default encryption context. Filled in by Validate.
	Name string
	// PrimaryKey columns, default ["id"]. Their values go into the
	// encryption context, so they must never change.
	PrimaryKey []string
	// Keys by name, default one key named "kms_key".
	Keys map[string]*Key
	// Columns that are encrypted, by column name.
	Columns map[string]*Column
	// Migrating is the adoption mode: a row whose key column is NULL is
	// read as plaintext (its mapped columns in their stored text form),
	// while every write still encrypts. Without it, a value beside a NULL
	// key column is an error, so that whoever can clear a key column
	// cannot inject plaintext. Turn it off once Encrypt has finished.
	Migrating bool
}

// Key is one data key per row: a key column holding the wrapped key, the
// master key that wraps it, and the versions that can still be read.
type Key struct {
	Name string // filled in by Validate
	// Column that stores the wrapped key, default "encrypted_<name>".
	Column string
	// KeyID of the master key for new rows, default the schema's KeyID.
	KeyID string
	// Version written as "v<Version>:" in front of new wrapped keys, default 1.
	Version int
	// Context is the encryption context template for Version; nil means the
	// default {"table": <table>, <pk column>: <pk value>, …}. Values may use
	// {column} for a primary-key column's value.
	Context map[string]string
	// PreviousVersions can still be read but are no longer written.
	PreviousVersions map[int]*KeyVersion
}

// KeyVersion is how an older version of a key was wrapped.
type KeyVersion struct {
	// KeyID of the master key of that version, default the key's KeyID.
	KeyID string
	// Context template of that version; nil means the default.
	Context map[string]string
}

// Column is one encrypted column.
type Column struct {
	Name string // filled in by Validate
	// Key is the name of the key that encrypts the column, default "kms_key".
	Key string
	// Type is the plaintext type, default envelope.Text.
	Type envelope.Type
	// BlindIndex, when set, makes the column searchable by equality.
	BlindIndex *BlindIndex
}

// LoadSchema reads and validates a schema map file.
func LoadSchema(path string) (*Schema, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kmspostgres: reading schema map: %w", err)
	}
	return ParseSchema(path, data)
}

type yamlSchema struct {
	KeyID               string                `yaml:"key_id"`
	Cache               *yamlCache            `yaml:"cache"`
	Tables              map[string]*yamlTable `yaml:"tables"`
	BlindIndexMasterKey *yamlWrappedMasterKey `yaml:"blind_index_master_key"`
}

type yamlCache struct {
	MaxAge  string `yaml:"max_age"`
	MaxUses int64  `yaml:"max_uses"`
	MaxKeys int    `yaml:"max_keys"`
}

type yamlTable struct {
	PrimaryKey stringList             `yaml:"primary_key"`
	Keys       map[string]*yamlKey    `yaml:"keys"`
	Columns    map[string]*yamlColumn `yaml:"columns"`
	Migrating  bool                   `yaml:"migrating"`
}

type yamlKey struct {
	Column           string                  `yaml:"column"`
	KeyID            string                  `yaml:"key_id"`
	Version          int                     `yaml:"version"`
	Context          map[string]string       `yaml:"context"`
	PreviousVersions map[int]*yamlKeyVersion `yaml:"previous_versions"`
}

type yamlKeyVersion struct {
	KeyID   string            `yaml:"key_id"`
	Context map[string]string `yaml:"context"`
}

type yamlColumn struct {
	Key        string          `yaml:"key"`
	Type       string          `yaml:"type"`
	BlindIndex *yamlBlindIndex `yaml:"blind_index"`
}

type stringList []string

func (s *stringList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*s = []string{n.Value}
		return nil
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		*s = l
		return nil
	}
	return fmt.Errorf("line %d: primary_key must be a column name or a list of names", n.Line)
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

func expandEnv(s string) string {
	return envRef.ReplaceAllStringFunc(s, func(m string) string {
		return os.Getenv(m[2 : len(m)-1])
	})
}

// ParseSchema parses and validates a schema map. name is used in error
// messages (usually the file path). JSON is accepted, as a subset of YAML.
// Unknown fields are errors, so a typo cannot silently leave a column
// unencrypted.
func ParseSchema(name string, data []byte) (*Schema, error) {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: %s: the file is empty; list the encrypted tables in a tables: section", ErrSchema, name)
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrSchema, name, err)
	}
	if err := checkFields(&doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrSchema, name, err)
	}
	var y yamlSchema
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true) // a backstop: checkFields has named every unknown field
	if err := dec.Decode(&y); err != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrSchema, name, yamlTypeNames.Replace(err.Error()))
	}
	if len(y.Tables) == 0 {
		return nil, fmt.Errorf("%w: %s: no tables; list the encrypted tables in a tables: section", ErrSchema, name)
	}
	s := &Schema{KeyID: expandEnv(y.KeyID), Tables: map[string]*Table{}, source: name}
	if y.Cache != nil {
		age, err := time.ParseDuration(y.Cache.MaxAge)
		if err != nil || age <= 0 {
			return nil, fmt.Errorf("%w: %s: cache: max_age %q must be a positive duration such as 5m (it bounds how long an unwrapped data key is reused after KMS access is cut)", ErrSchema, name, y.Cache.MaxAge)
		}
		s.Cache = &CacheConfig{MaxAge: age, MaxUses: y.Cache.MaxUses, MaxKeys: y.Cache.MaxKeys}
	}
	if m := y.BlindIndexMasterKey; m != nil {
		s.BlindIndexMasterKey = &WrappedMasterKey{Wrapped: expandEnv(m.Wrapped), KeyID: expandEnv(m.KeyID)}
	}
	for tn, yt := range y.Tables {
		if yt == nil {
			yt = &yamlTable{}
		}
		t := &Table{PrimaryKey: yt.PrimaryKey, Keys: map[string]*Key{}, Columns: map[string]*Column{}, Migrating: yt.Migrating}
		for kn, yk := range yt.Keys {
			if yk == nil {
				yk = &yamlKey{}
			}
			k := &Key{Column: yk.Column, KeyID: expandEnv(yk.KeyID), Version: yk.Version, Context: yk.Context}
			if yk.PreviousVersions != nil {
				k.PreviousVersions = map[int]*KeyVersion{}
				for v, pv := range yk.PreviousVersions {
					if pv == nil {
						pv = &yamlKeyVersion{}
					}
					k.PreviousVersions[v] = &KeyVersion{KeyID: expandEnv(pv.KeyID), Context: pv.Context}
				}
			}
			t.Keys[kn] = k
		}
		for cn, yc := range yt.Columns {
			if yc == nil {
				yc = &yamlColumn{}
			}
			c := &Column{Key: yc.Key}
			if yc.Type != "" {
				typ, err := envelope.ParseType(yc.Type)
				if err != nil {
					return nil, fmt.Errorf("%w: %s: table %s, column %s: %v", ErrSchema, name, tn, cn, err)
				}
				c.Type = typ
			}
			bi, err := blindIndexFromYAML(yc.BlindIndex)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: table %s, column %s: %v", ErrSchema, name, tn, cn, err)
			}
			c.BlindIndex = bi
			t.Columns[cn] = c
		}
		s.Tables[tn] = t
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// The fields of each level of the schema map, in the order the README
// lists them.
var (
	schemaFields  = []string{"key_id", "cache", "blind_index_master_key", "tables"}
	masterFields  = []string{"wrapped", "key_id"}
	blindFields   = []string{"column", "algorithm", "expression", "key_of", "master_key_env", "rotate"}
	rotateFields  = []string{"column", "algorithm", "expression", "master_key_env"}
	cacheFields   = []string{"max_age", "max_uses", "max_keys"}
	tableFields   = []string{"primary_key", "keys", "columns", "migrating"}
	keyFields     = []string{"column", "key_id", "version", "context", "previous_versions"}
	versionFields = []string{"key_id", "context"}
	columnFields  = []string{"key", "type", "blind_index"}
)

// yamlTypeNames turns the decoder's internal type names into words, for
// the errors checkFields does not catch first (a string where a number
// belongs, say).
var yamlTypeNames = strings.NewReplacer(
	"yaml: unmarshal errors:\n  ", "",
	"\n  ", "; ",
	"kmspostgres.yamlSchema", "the schema map",
	"kmspostgres.yamlTable", "a table",
	"kmspostgres.yamlKey", "a key",
	"kmspostgres.yamlKeyVersion", "a previous version",
	"kmspostgres.yamlColumn", "a column",
	"kmspostgres.yamlBlindIndex", "a blind_index",
	"kmspostgres.yamlBlindRotation", "a blind_index rotate",
	"map[string]*kmspostgres.yamlTable", "a map of tables",
	"map[string]*kmspostgres.yamlKey", "a map of keys",
	"map[string]*kmspostgres.yamlColumn", "a map of columns",
	"map[int]*kmspostgres.yamlKeyVersion", "a map of versions",
)

// checkFields walks the parsed document and names the first unknown field
// with its line and the valid fields at that place, or the first place
// that is not a mapping where one belongs. It replaces the decoder's
// "field colums not found in type kmspostgres.yamlTable".
func checkFields(doc *yaml.Node) error {
	root := doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if isNull(root) {
		return errors.New("the file is empty; list the encrypted tables in a tables: section")
	}
	if err := fields(root, "the schema map", "at the top level", schemaFields); err != nil {
		return err
	}
	if cache := mapValue(root, "cache"); cache != nil {
		if err := fields(cache, "cache", "in cache", cacheFields); err != nil {
			return err
		}
	}
	if mk := mapValue(root, "blind_index_master_key"); mk != nil {
		if err := fields(mk, "blind_index_master_key", "in blind_index_master_key", masterFields); err != nil {
			return err
		}
	}
	tables := mapValue(root, "tables")
	if tables == nil || isNull(tables) {
		return nil
	}
	return entries(tables, "tables", func(tn string, t *yaml.Node) error {
		in := "in table " + tn
		if err := fields(t, "table "+tn, in, tableFields); err != nil {
			return err
		}
		if keys := mapValue(t, "keys"); keys != nil {
			err := entries(keys, "keys "+in, func(kn string, k *yaml.Node) error {
				in := "in table " + tn + ", key " + kn
				if err := fields(k, "table "+tn+", key "+kn, in, keyFields); err != nil {
					return err
				}
				if pv := mapValue(k, "previous_versions"); pv != nil {
					return entries(pv, "previous_versions "+in, func(v string, n *yaml.Node) error {
						return fields(n, "table "+tn+", key "+kn+", previous version "+v, "in table "+tn+", key "+kn+", previous version "+v, versionFields)
					})
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		if cols := mapValue(t, "columns"); cols != nil {
			return entries(cols, "columns "+in, func(cn string, c *yaml.Node) error {
				if err := fields(c, "table "+tn+", column "+cn, "in table "+tn+", column "+cn, columnFields); err != nil {
					return err
				}
				if bi := mapValue(c, "blind_index"); bi != nil {
					at := "table " + tn + ", column " + cn + ", blind_index"
					if err := fields(bi, at, "in "+at, blindFields); err != nil {
						return err
					}
					if r := mapValue(bi, "rotate"); r != nil {
						return fields(r, at+" rotate", "in "+at+" rotate", rotateFields)
					}
				}
				return nil
			})
		}
		return nil
	})
}

// fields checks that n is a mapping (or empty) whose keys are all valid.
func fields(n *yaml.Node, what, in string, valid []string) error {
	n = deref(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: %s must be a mapping of fields (%s)", n.Line, what, strings.Join(valid, ", "))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if k.Tag == "!!merge" {
			continue // <<: *anchor; the decoder checks what it brings in
		}
		if !slices.Contains(valid, k.Value) {
			return fmt.Errorf("line %d: unknown field %s %s; valid fields: %s", k.Line, k.Value, in, strings.Join(valid, ", "))
		}
	}
	return nil
}

// entries calls f for each name: value pair of a mapping of names.
func entries(n *yaml.Node, what string, f func(name string, v *yaml.Node) error) error {
	n = deref(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: %s must be a mapping of names", n.Line, what)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Tag == "!!merge" {
			continue
		}
		if err := f(n.Content[i].Value, n.Content[i+1]); err != nil {
			return err
		}
	}
	return nil
}

// mapValue returns the value of key in mapping n, or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// deref follows an alias (*anchor) to its node.
func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*$`)

// Validate checks the schema and fills in every default. It is called by
// LoadSchema and ParseSchema; call it yourself on a Schema built in Go.
func (s *Schema) Validate() error {
	if s.KeyID == "" {
		s.KeyID = os.Getenv("KMS_KEY_ID")
	}
	if len(s.Tables) == 0 {
		return s.invalid("no tables")
	}
	if err := s.Cache.validate(); err != nil {
		return s.invalid("cache: %v", err)
	}
	if err := s.validateMasterKey(); err != nil {
		return err
	}
	s.byName = map[string]*Table{}
	for _, tn := range slices.Sorted(maps.Keys(s.Tables)) {
		t := s.Tables[tn]
		if t == nil {
			return s.invalid("table %s is empty", tn)
		}
		if err := s.validateTable(tn, t); err != nil {
			return err
		}
	}
	return s.validateBlindKeys()
}

// invalid is a validation error that names the map.
func (s *Schema) invalid(format string, args ...any) error {
	where := s.source
	if where == "" {
		where = "schema"
	}
	return fmt.Errorf("%w: %s: %s", ErrSchema, where, fmt.Sprintf(format, args...))
}

// validateTable checks one table's name, primary key, keys and columns.
func (s *Schema) validateTable(tn string, t *Table) error {
	t.Name = tn
	parts := strings.Split(tn, ".")
	if len(parts) > 2 {
		return s.invalid("table %s: name must be table or schema.table", tn)
	}
	for _, p := range parts {
		if !identRe.MatchString(p) {
			return s.invalid("table %s: %q is not a plain SQL identifier", tn, p)
		}
	}
	lower := strings.ToLower(tn)
	if _, dup := s.byName[lower]; dup {
		return s.invalid("table %s is listed twice", tn)
	}
	s.byName[lower] = t
	if len(t.PrimaryKey) == 0 {
		t.PrimaryKey = []string{"id"}
	}
	pk := map[string]bool{}
	for _, c := range t.PrimaryKey {
		if !identRe.MatchString(c) {
			return s.invalid("table %s: primary key column %q is not a plain SQL identifier", tn, c)
		}
		pk[c] = true
	}
	if len(t.Keys) == 0 {
		t.Keys = map[string]*Key{"kms_key": {}}
	}
	keyCols := map[string]string{} // key column → key name
	for _, kn := range slices.Sorted(maps.Keys(t.Keys)) {
		if t.Keys[kn] == nil {
			t.Keys[kn] = &Key{}
		}
		k := t.Keys[kn]
		if err := s.validateKey(t, kn, k, pk); err != nil {
			return err
		}
		if other, dup := keyCols[k.Column]; dup {
			return s.invalid("table %s: keys %s and %s share the column %s", tn, other, kn, k.Column)
		}
		keyCols[k.Column] = kn
	}
	if len(t.Columns) == 0 {
		return s.invalid("table %s has no encrypted columns", tn)
	}
	for _, cn := range slices.Sorted(maps.Keys(t.Columns)) {
		if t.Columns[cn] == nil {
			t.Columns[cn] = &Column{}
		}
		if err := s.validateColumn(t, cn, t.Columns[cn], pk, keyCols); err != nil {
			return err
		}
	}
	return nil
}

// validateKey checks one key and fills in its defaults: column, key id,
// version, and the key ids of its previous versions.
func (s *Schema) validateKey(t *Table, kn string, k *Key, pk map[string]bool) error {
	tn := t.Name
	k.Name = kn
	if k.Column == "" {
		k.Column = "encrypted_" + kn
	}
	if !identRe.MatchString(k.Column) {
		return s.invalid("table %s, key %s: column %q is not a plain SQL identifier", tn, kn, k.Column)
	}
	if pk[k.Column] {
		return s.invalid("table %s, key %s: the key column %s is a primary-key column", tn, kn, k.Column)
	}
	if k.KeyID == "" {
		k.KeyID = s.KeyID
	}
	if k.KeyID == "" {
		return s.invalid("table %s, key %s: empty key id; set key_id (top level or on the key) or KMS_KEY_ID", tn, kn)
	}
	if k.Version == 0 {
		k.Version = 1
	}
	if k.Version < 1 {
		return s.invalid("table %s, key %s: version %d must be a positive integer", tn, kn, k.Version)
	}
	if err := checkTemplate(k.Context, pk); err != nil {
		return s.invalid("table %s, key %s: context: %v", tn, kn, err)
	}
	for _, v := range slices.Sorted(maps.Keys(k.PreviousVersions)) {
		pv := k.PreviousVersions[v]
		if v < 1 {
			return s.invalid("table %s, key %s: previous version %d must be a positive integer", tn, kn, v)
		}
		if v == k.Version {
			return s.invalid("table %s, key %s: version %d is both current and in previous_versions", tn, kn, v)
		}
		if pv == nil {
			pv = &KeyVersion{}
			k.PreviousVersions[v] = pv
		}
		if pv.KeyID == "" {
			pv.KeyID = k.KeyID
		}
		if err := checkTemplate(pv.Context, pk); err != nil {
			return s.invalid("table %s, key %s, previous version %d: context: %v", tn, kn, v, err)
		}
	}
	return nil
}

// validateColumn checks one encrypted column and fills in its key and
// type.
func (s *Schema) validateColumn(t *Table, cn string, c *Column, pk map[string]bool, keyCols map[string]string) error {
	tn := t.Name
	c.Name = cn
	if !identRe.MatchString(cn) {
		return s.invalid("table %s: column %q is not a plain SQL identifier", tn, cn)
	}
	if pk[cn] {
		return s.invalid("table %s, column %s: a primary-key column cannot be encrypted (it is part of the encryption context)", tn, cn)
	}
	if _, isKey := keyCols[cn]; isKey {
		return s.invalid("table %s, column %s: it is a key column", tn, cn)
	}
	if c.Key == "" {
		c.Key = "kms_key"
	}
	if _, ok := t.Keys[c.Key]; !ok {
		return s.invalid("table %s, column %s: key %q does not exist (keys: %s)", tn, cn, c.Key, strings.Join(slices.Sorted(maps.Keys(t.Keys)), ", "))
	}
	if c.Type == 0 {
		c.Type = envelope.Text
	}
	if !c.Type.Valid() {
		return s.invalid("table %s, column %s: unknown type %v", tn, cn, c.Type)
	}
	return s.validateBlindIndex(t, c, pk, keyCols)
}

var placeholder = regexp.MustCompile(`\{([^{}]*)\}`)

func checkTemplate(tmpl map[string]string, pk map[string]bool) error {
	for k, v := range tmpl {
		if k == "" {
			return errors.New("empty key")
		}
		for _, m := range placeholder.FindAllStringSubmatch(v, -1) {
			if !pk[m[1]] {
				return fmt.Errorf("%s uses {%s}, which is not a primary-key column; a context may only use constants and primary-key values, which never change", k, m[1])
			}
		}
		rest := placeholder.ReplaceAllString(v, "")
		if strings.ContainsAny(rest, "{}") {
			return fmt.Errorf("%s has an unbalanced brace", k)
		}
	}
	return nil
}

// Table returns the table entry for a name as SQL spells it (case-folded),
// schema-qualified or not. An unqualified name matches a map entry without
// schema or with schema "public".
func (s *Schema) Table(schema, name string) *Table {
	name = strings.ToLower(name)
	schema = strings.ToLower(schema)
	if schema == "" || schema == "public" {
		if t := s.byName[name]; t != nil {
			return t
		}
		return s.byName["public."+name]
	}
	return s.byName[schema+"."+name]
}

// versionOf returns the key id and context template of a version, and
// whether that version can be read.
func (k *Key) versionOf(v int) (keyID string, tmpl map[string]string, ok bool) {
	if v == k.Version {
		return k.KeyID, k.Context, true
	}
	if pv, found := k.PreviousVersions[v]; found {
		return pv.KeyID, pv.Context, true
	}
	return "", nil, false
}

// contextFor renders the encryption context of a row for key version v.
// pk holds the primary-key values as text, in PrimaryKey order.
func (t *Table) contextFor(k *Key, v int, pk []string) (keyID string, c envelope.Context, err error) {
	keyID, tmpl, ok := k.versionOf(v)
	if !ok {
		return "", nil, fmt.Errorf("%w: %d (table %s, key %s is at version %d; add it to previous_versions to read it)", ErrVersion, v, t.Name, k.Name, k.Version)
	}
	if len(pk) != len(t.PrimaryKey) {
		return "", nil, fmt.Errorf("kmspostgres: table %s: %d primary-key values for %d columns", t.Name, len(pk), len(t.PrimaryKey))
	}
	if tmpl == nil {
		c = make(envelope.Context, len(pk)+1)
		c["table"] = t.Name
		for i, col := range t.PrimaryKey {
			c[col] = pk[i]
		}
		return keyID, c, nil
	}
	c = make(envelope.Context, len(tmpl))
	for name, val := range tmpl {
		c[name] = placeholder.ReplaceAllStringFunc(val, func(m string) string {
			col := m[1 : len(m)-1]
			for i, p := range t.PrimaryKey {
				if p == col {
					return pk[i]
				}
			}
			return m // unreachable after Validate
		})
	}
	return keyID, c, nil
}

// String renders the schema as a short summary, for logs.
func (s *Schema) String() string {
	var b strings.Builder
	for _, tn := range slices.Sorted(maps.Keys(s.Tables)) {
		t := s.Tables[tn]
		b.WriteString(tn + "(" + strings.Join(slices.Sorted(maps.Keys(t.Columns)), ",") + ") ")
	}
	return strings.TrimSpace(b.String()) + " key_id=" + strconv.Quote(s.KeyID)
}
