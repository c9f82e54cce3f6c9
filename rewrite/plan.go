package rewrite

// Plan is what to do with one SQL text. Plans are immutable and shared
// between connections.
type Plan struct {
	// Passthrough: run the original SQL with the original arguments; no
	// encrypted column is read or written.
	Passthrough bool
	// Invalidates: the statement may change table definitions, so cached
	// plans and catalog answers must be dropped after it runs.
	Invalidates bool
	// SetsConfig: the statement may change a setting (SET, RESET,
	// DISCARD, set_config), search_path among them; LocalConfig when it
	// may do so for the transaction only (SET LOCAL, set_config(…, true)).
	SetsConfig, LocalConfig bool
	// EndsTx: COMMIT, ROLLBACK and the like, which undo SET LOCAL.
	EndsTx bool
	// TxControl: the statement begins or ends a transaction (BEGIN,
	// START TRANSACTION, COMMIT, ROLLBACK, PREPARE TRANSACTION, …); not
	// SAVEPOINT, RELEASE or ROLLBACK TO, which only work inside one.
	TxControl bool
	// DropsStatements: DISCARD ALL, DISCARD PLANS or DEALLOCATE ALL
	// removed the session's prepared statements, which pgx caches.
	DropsStatements bool
	// Calls lists the functions the statement calls, lower-case, with
	// their schema when written ("app.f", "lower"): one that is not built
	// in may change settings too.
	Calls []string

	SQL string // the SQL to run
	// Args lists, for each parameter of SQL, where its value comes from.
	// Nil with Passthrough.
	Args []Arg

	// Out describes the result columns when some must be decrypted.
	Out *Output

	Insert *Insert
	Update *Update
	// Lookups are the blind-index values the statement compares with
	// (Arg.Lookup refers to them).
	Lookups []Lookup
	// Prechecks: blind-index equalities the driver does not check on rows
	// it reads (inside subqueries, CTEs, aggregate queries, …); each is
	// checked on every row its index values select before the statement
	// runs, and restricted to those rows.
	Prechecks []Precheck
	// Verify: a DELETE or UPDATE (of no encrypted column) by a
	// blind-indexed column; the rows it would change are read, locked and
	// checked first, and SQL changes only those.
	Verify *Verify
}

// Verify is the check of the rows a DELETE or UPDATE selects by blind
// index, before it runs. SelectSQL (taking SelectArgs) returns ctid::text,
// tableoid::text, the primary key as text, then for each check its key
// column and encrypted column (Check.At is the latter, Check.Source the
// table key index), and locks the rows. SQL takes the ctids and tableoids
// of the rows that passed in slots CtidSlot and TableoidSlot.
type Verify struct {
	Table        *Table
	SelectSQL    string
	SelectArgs   []Arg
	Checks       []Check
	CtidSlot     int
	TableoidSlot int
	Slots        int
}

// Arg is where one parameter of a rewritten statement comes from: the
// caller's argument Orig (0-based) when Slot < 0, else the value the driver
// computes for Slot; when Lookup > 0, the blind-index value of
// Plan.Lookups[Lookup-1] instead.
type Arg struct {
	Orig   int
	Slot   int
	Lookup int
}

// Output maps result columns to their decryption.
type Output struct {
	Visible int      // the first Visible columns are the caller's
	Names   []string // their names, for cross-checks
	Cols    []OutCol // len Visible
	Sources []Source // row keys, read from hidden columns after the visible ones
	// Checks are encrypted columns read after the Sources' hidden columns
	// to verify blind-index matches (see Check).
	Checks []Check
}

// OutCol is one visible result column.
type OutCol struct {
	Table  *Table // nil: plain column, passed through
	Column string
	Source int // index into Output.Sources
}

// Source is where a result row's key for some columns comes from: the
// wrapped key and the primary-key values (as text), by result column index.
type Source struct {
	Table *Table
	Key   int
	KeyAt int
	PKAt  []int
}

// ValueKind says where a value written to an encrypted or primary-key
// column comes from.
type ValueKind int

// The kinds of written value.
const (
	ValParam     ValueKind = iota // the caller's argument Param
	ValConst                      // a literal in the SQL, Const
	ValNull                       // NULL or DEFAULT
	ValGenerated                  // made by the driver (primary keys)
)

// Value is a value written to a column.
type Value struct {
	Kind  ValueKind
	Param int // 0-based
	Const any // string, int64 or bool
}

// Insert is the work an INSERT … VALUES needs before it runs.
type Insert struct {
	Table *Table
	Rows  []InsertRow
	// Slots is how many driver-computed values SQL takes.
	Slots int
	// OverridingSystem: the plan adds OVERRIDING SYSTEM VALUE.
	OverridingSystem bool
	// ConflictChecks: an ON CONFLICT … DO UPDATE whose conflict can be
	// decided by a blind index; the driver checks the rows it may update
	// before the statement runs.
	ConflictChecks []ConflictCheck
	// CheckedCtidSlot and CheckedTableoidSlot, with ConflictChecks: the
	// slots of the rows the checks read (ctid and tableoid as text
	// arrays). The DO UPDATE is restricted to them wherever the existing
	// row's index equals the new row's, so that a row whose index value
	// was forged after the check read (a race) is not updated either.
	CheckedCtidSlot, CheckedTableoidSlot int
}

// ConflictCheck reads, before an INSERT … ON CONFLICT DO UPDATE runs, the
// existing rows whose blind-index column holds one of the index values the
// INSERT writes for Column, and locks them: SelectSQL takes the array of
// those values as $1 and returns each row's key column (Table.Encrypted's
// key), primary key as text, the encrypted cell and its index value. The
// driver refuses the statement unless each row holds the value its index
// says: a forged index value must not make the upsert update, and
// return, another row.
type ConflictCheck struct {
	Column string
	// Rotate: the check is of the rotation's index column (Blind.Rotate),
	// whose unique index may decide the conflict too.
	Rotate    bool
	SelectSQL string // … and, after the index value, ctid and tableoid as text
}

// InsertRow is one VALUES row.
type InsertRow struct {
	PK     []Value // per Table.PrimaryKey
	PKSlot []int   // slot for each generated primary-key value, -1 otherwise
	Cells  []Cell
	// KeySlot per Table.Keys: the slot of the wrapped key, -1 when the row
	// writes no column under that key.
	KeySlot []int
	// Indexes are the blind-index values the row writes: Column is the
	// encrypted column, Slot the slot of its index value.
	Indexes []Cell
	// Rotations are the values of the rotation index columns
	// (BlindIndex.Rotate) the row writes, as Indexes.
	Rotations []Cell
}

// Cell is a value for an encrypted column and the slot of its ciphertext.
type Cell struct {
	Column string
	Key    int
	Value  Value
	Slot   int
}

// Update is the work an UPDATE that writes encrypted columns needs: find
// and lock the rows, key each row, then run SQL with arrays of per-row
// values joined on ctid.
type Update struct {
	Table *Table
	// SelectSQL returns ctid::text, tableoid::text, the primary key as
	// text, the key columns of Keys, then per key of Keys whether the
	// columns under it that the UPDATE leaves alone hold values, for the
	// rows the UPDATE would change; LockSQL is the
	// same with FOR NO KEY UPDATE. Both take SelectArgs.
	SelectSQL  string
	LockSQL    string
	SelectArgs []Arg
	Keys       []UpdateKey
	Cells      []Cell // Slot: the array of ciphertexts, one per row
	CtidSlot   int    // the array of ctids
	// TableoidSlot is the array of tableoids: with the ctid, it names a
	// row exactly on partitioned and inherited tables alike.
	TableoidSlot int
	Slots        int
	// Indexes are the blind-index values the UPDATE writes, one value for
	// every row (Column is the encrypted column).
	Indexes []Cell
	// Rotations are the values of the rotation index columns
	// (BlindIndex.Rotate) the UPDATE writes, as Indexes.
	Rotations []Cell
	// Checks are blind-index equalities of the WHERE clause to verify on
	// each locked row before it is written: LockSQL and SelectSQL return,
	// after the key columns of Keys, the key column (text) then the
	// encrypted column of each check. Check.At is the encrypted column's
	// position, Check.Source the table key index.
	Checks []Check
}

// UpdateKey is a key of the table that the UPDATE writes under.
type UpdateKey struct {
	Key int
	// Fresh: every column under the key is set, so each row gets a new
	// data key and no unwrap is needed.
	Fresh bool
	Slot  int // the array of wrapped keys, one per row
}
