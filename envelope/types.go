package envelope

import (
	"bytes"
	"database/sql/driver"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Type is the declared plaintext type of an encrypted column. Values are
// encoded by their type before sealing and decoded back to the Go value
// pgx's database/sql driver would return for an unencrypted column of that
// type. The encodings are documented in the README.
type Type uint8

// The plaintext types. Their numeric values are not stored anywhere.
const (
	Text Type = iota + 1
	Bytea
	Smallint
	Integer
	Bigint
	Real
	Double
	Numeric
	Boolean
	Date
	Timestamp
	Timestamptz
	Time
	UUID
	JSON
	JSONB
)

var typeNames = map[Type]string{
	Text: "text", Bytea: "bytea", Smallint: "smallint", Integer: "integer",
	Bigint: "bigint", Real: "real", Double: "double precision",
	Numeric: "numeric", Boolean: "boolean", Date: "date",
	Timestamp: "timestamp", Timestamptz: "timestamptz", Time: "time",
	UUID: "uuid", JSON: "json", JSONB: "jsonb",
}

var typeAliases = map[string]Type{
	"text": Text, "varchar": Text, "character varying": Text,
	"bytea":    Bytea,
	"smallint": Smallint, "int2": Smallint,
	"integer": Integer, "int": Integer, "int4": Integer,
	"bigint": Bigint, "int8": Bigint,
	"real": Real, "float4": Real,
	"double precision": Double, "float8": Double, "double": Double,
	"numeric": Numeric, "decimal": Numeric,
	"boolean": Boolean, "bool": Boolean,
	"date":      Date,
	"timestamp": Timestamp, "timestamp without time zone": Timestamp,
	"timestamptz": Timestamptz, "timestamp with time zone": Timestamptz,
	"time": Time, "time without time zone": Time,
	"uuid": UUID,
	"json": JSON, "jsonb": JSONB,
}

// ParseType maps a PostgreSQL type name (or a common alias such as int8 or
// float8) to a Type.
func ParseType(name string) (Type, error) {
	t, ok := typeAliases[strings.ToLower(strings.Join(strings.Fields(name), " "))]
	if !ok {
		return 0, fmt.Errorf("unknown type %q (supported: text, bytea, smallint, integer, bigint, real, double precision, numeric, boolean, date, timestamp, timestamptz, time, uuid, json, jsonb)", name)
	}
	return t, nil
}

// Valid reports whether t is one of the declared types.
func (t Type) Valid() bool {
	_, ok := typeNames[t]
	return ok
}

// String returns the PostgreSQL name of the type.
func (t Type) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return "Type(" + strconv.Itoa(int(t)) + ")"
}

// Encode turns a Go value into the plaintext bytes for type t. It accepts
// what database/sql and pgx accept for a column of that type: the driver
// value kinds, driver.Valuer, pointers and named types, and strings in
// PostgreSQL's text input format. nil is not accepted: NULL is never
// encrypted. Errors wrap ErrFormat and never quote the value.
func (t Type) Encode(v any) ([]byte, error) {
	if t == JSON || t == JSONB {
		return encodeJSON(t, v)
	}
	dv, err := driver.DefaultParameterConverter.ConvertValue(v)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot use %T as %s", ErrFormat, v, t)
	}
	if dv == nil {
		return nil, fmt.Errorf("%w: NULL has no plaintext encoding", ErrFormat)
	}
	switch t {
	case Text:
		var s string
		switch x := dv.(type) {
		case string:
			s = x
		case []byte:
			s = string(x)
		case int64:
			s = strconv.FormatInt(x, 10)
		default:
			return nil, mismatch(v, t)
		}
		if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
			return nil, fmt.Errorf("%w: text value is not valid UTF-8 without NUL bytes", ErrFormat)
		}
		return []byte(s), nil
	case Bytea:
		switch x := dv.(type) {
		case []byte:
			return append([]byte{}, x...), nil
		case string:
			if strings.HasPrefix(x, `\x`) {
				b, err := hex.DecodeString(x[2:])
				if err != nil {
					return nil, fmt.Errorf("%w: bytea text is not valid \\x hex", ErrFormat)
				}
				return b, nil
			}
			return []byte(x), nil
		}
		return nil, mismatch(v, t)
	case Smallint, Integer, Bigint:
		i, err := toInt(dv, t)
		if err != nil {
			return nil, err
		}
		return binary.BigEndian.AppendUint64(nil, uint64(i)), nil
	case Real, Double:
		f, err := toFloat(dv, t)
		if err != nil {
			return nil, err
		}
		if t == Real {
			f = float64(float32(f))
		}
		return binary.BigEndian.AppendUint64(nil, math.Float64bits(f)), nil
	case Numeric:
		s, err := toNumeric(dv)
		if err != nil {
			return nil, err
		}
		return []byte(s), nil
	case Boolean:
		b, err := toBool(dv)
		if err != nil {
			return nil, err
		}
		if b {
			return []byte{1}, nil
		}
		return []byte{0}, nil
	case Date:
		d, err := toTime(dv, t)
		if err != nil {
			return nil, err
		}
		days := time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, time.UTC).Unix() / 86400
		if days < math.MinInt32 || days > math.MaxInt32 {
			return nil, fmt.Errorf("%w: date out of range", ErrFormat)
		}
		return binary.BigEndian.AppendUint32(nil, uint32(int32(days))), nil
	case Timestamp, Timestamptz:
		ts, err := toTime(dv, t)
		if err != nil {
			return nil, err
		}
		if t == Timestamp {
			// Like pgx: the wall clock is kept and the zone discarded.
			ts = time.Date(ts.Year(), ts.Month(), ts.Day(), ts.Hour(), ts.Minute(), ts.Second(), ts.Nanosecond(), time.UTC)
		}
		// Like pgx: microseconds, sub-microsecond digits truncated.
		us := ts.Unix()*1_000_000 + int64(ts.Nanosecond())/1000
		return binary.BigEndian.AppendUint64(nil, uint64(us)), nil
	case Time:
		tt, err := toTime(dv, t)
		if err != nil {
			return nil, err
		}
		us := int64(tt.Hour())*3_600_000_000 + int64(tt.Minute())*60_000_000 + int64(tt.Second())*1_000_000 + int64(tt.Nanosecond())/1000
		return binary.BigEndian.AppendUint64(nil, uint64(us)), nil
	case UUID:
		return toUUID(dv)
	}
	return nil, fmt.Errorf("%w: unknown type %v", ErrFormat, t)
}

// Decode turns plaintext bytes back into the Go value for type t: string,
// []byte, int64, float64, bool or time.Time.
func (t Type) Decode(b []byte) (any, error) {
	bad := func() error {
		return fmt.Errorf("%w: plaintext of %d bytes is not a %s; did the column's type change in the schema map?", ErrFormat, len(b), t)
	}
	switch t {
	case Text:
		if !utf8.Valid(b) || bytes.IndexByte(b, 0) >= 0 {
			return nil, bad()
		}
		return string(b), nil
	case Numeric:
		// Encode stores the normalized form; anything else was not written
		// as a numeric.
		if n, err := NormalizeNumeric(string(b)); err != nil || n != string(b) {
			return nil, bad()
		}
		return string(b), nil
	case Bytea, JSON, JSONB:
		if b == nil {
			b = []byte{} // empty, not NULL
		}
		return b, nil
	case Smallint, Integer, Bigint:
		if len(b) != 8 {
			return nil, bad()
		}
		i := int64(binary.BigEndian.Uint64(b))
		if (t == Smallint && (i < math.MinInt16 || i > math.MaxInt16)) || (t == Integer && (i < math.MinInt32 || i > math.MaxInt32)) {
			return nil, bad()
		}
		return i, nil
	case Real, Double:
		if len(b) != 8 {
			return nil, bad()
		}
		return math.Float64frombits(binary.BigEndian.Uint64(b)), nil
	case Boolean:
		if len(b) != 1 || b[0] > 1 {
			return nil, bad()
		}
		return b[0] == 1, nil
	case Date:
		if len(b) != 4 {
			return nil, bad()
		}
		days := int64(int32(binary.BigEndian.Uint32(b)))
		return time.Unix(days*86400, 0).UTC(), nil
	case Timestamp, Timestamptz:
		if len(b) != 8 {
			return nil, bad()
		}
		us := int64(binary.BigEndian.Uint64(b))
		sec, rem := us/1_000_000, us%1_000_000
		if rem < 0 {
			sec, rem = sec-1, rem+1_000_000
		}
		ts := time.Unix(sec, rem*1000)
		if t == Timestamp {
			return ts.UTC(), nil
		}
		return ts, nil // local time, as pgx returns timestamptz
	case Time:
		if len(b) != 8 {
			return nil, bad()
		}
		us := int64(binary.BigEndian.Uint64(b))
		if us < 0 || us > 86_400_000_000 {
			return nil, bad()
		}
		return time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(us) * time.Microsecond), nil
	case UUID:
		if len(b) != 16 {
			return nil, bad()
		}
		h := hex.EncodeToString(b)
		return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
	}
	return nil, fmt.Errorf("%w: unknown type %v", ErrFormat, t)
}

func mismatch(v any, t Type) error {
	return fmt.Errorf("%w: cannot use %T as %s", ErrFormat, v, t)
}

func toInt(dv any, t Type) (int64, error) {
	var i int64
	switch x := dv.(type) {
	case int64:
		i = x
	case float64:
		if x != math.Trunc(x) || math.IsInf(x, 0) || math.IsNaN(x) || x < -(1<<63) || x >= 1<<63 {
			return 0, fmt.Errorf("%w: %s value is not a whole number", ErrFormat, t)
		}
		i = int64(x)
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: text is not a valid %s", ErrFormat, t)
		}
		i = n
	case bool:
		return 0, mismatch(dv, t)
	default:
		return 0, mismatch(dv, t)
	}
	lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
	switch t {
	case Smallint:
		lo, hi = math.MinInt16, math.MaxInt16
	case Integer:
		lo, hi = math.MinInt32, math.MaxInt32
	}
	if i < lo || i > hi {
		return 0, fmt.Errorf("%w: value out of range for %s", ErrFormat, t)
	}
	return i, nil
}

func toFloat(dv any, t Type) (float64, error) {
	switch x := dv.(type) {
	case float64:
		return x, nil
	case int64:
		return float64(x), nil
	case string:
		s := strings.TrimSpace(x)
		switch strings.ToLower(s) {
		case "nan":
			return math.NaN(), nil
		case "infinity", "+infinity", "inf", "+inf":
			return math.Inf(1), nil
		case "-infinity", "-inf":
			return math.Inf(-1), nil
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: text is not a valid %s", ErrFormat, t)
		}
		return f, nil
	}
	return 0, mismatch(dv, t)
}

// toNumeric returns the exact decimal text of a numeric value. Exponent
// notation is expanded so that the stored text is what PostgreSQL would
// print; trailing zeros (the scale) are kept, as PostgreSQL keeps them.
func toNumeric(dv any) (string, error) {
	switch x := dv.(type) {
	case int64:
		return strconv.FormatInt(x, 10), nil
	case float64:
		switch {
		case math.IsNaN(x):
			return "NaN", nil
		case math.IsInf(x, 1):
			return "Infinity", nil
		case math.IsInf(x, -1):
			return "-Infinity", nil
		}
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case string:
		return NormalizeNumeric(x)
	case []byte:
		return NormalizeNumeric(string(x))
	}
	return "", mismatch(dv, Numeric)
}

// NormalizeNumeric validates a numeric in PostgreSQL's input syntax and
// returns it in PostgreSQL's output form: no plus sign, no exponent, no
// redundant leading zeros, the scale kept.
func NormalizeNumeric(s string) (string, error) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case "nan":
		return "NaN", nil
	case "infinity", "+infinity", "inf", "+inf":
		return "Infinity", nil
	case "-infinity", "-inf":
		return "-Infinity", nil
	}
	bad := fmt.Errorf("%w: text is not a valid numeric", ErrFormat)
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	mant, exp := s, 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		mant = s[:i]
		e, err := strconv.Atoi(s[i+1:])
		if err != nil || e > 1000 || e < -1000 {
			return "", bad
		}
		exp = e
	}
	intPart, frac := mant, ""
	if i := strings.IndexByte(mant, '.'); i >= 0 {
		intPart, frac = mant[:i], mant[i+1:]
	}
	if intPart == "" && frac == "" {
		return "", bad
	}
	for _, c := range intPart + frac {
		if c < '0' || c > '9' {
			return "", bad
		}
	}
	// Shift the decimal point by exp.
	digits := intPart + frac
	point := len(intPart) + exp
	scale := len(frac) - exp
	if scale < 0 {
		scale = 0
	}
	if point < 0 {
		digits = strings.Repeat("0", -point) + digits
		point = 0
	}
	for len(digits) < point+scale {
		digits += "0"
	}
	ip := strings.TrimLeft(digits[:point], "0")
	if ip == "" {
		ip = "0"
	}
	fp := digits[point : point+scale]
	out := ip
	if scale > 0 {
		out += "." + fp
	}
	if neg && strings.Trim(out, "0.") != "" {
		out = "-" + out
	}
	return out, nil
}

func toBool(dv any) (bool, error) {
	switch x := dv.(type) {
	case bool:
		return x, nil
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "t", "true", "y", "yes", "on", "1":
			return true, nil
		case "f", "false", "n", "no", "off", "0":
			return false, nil
		}
		return false, fmt.Errorf("%w: text is not a valid boolean", ErrFormat)
	}
	return false, mismatch(dv, Boolean)
}

var timeLayouts = map[Type][]string{
	Date:        {"2006-01-02"},
	Timestamp:   {"2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999", "2006-01-02"},
	Timestamptz: {time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07", "2006-01-02T15:04:05.999999999Z07"},
	Time:        {"15:04:05.999999999", "15:04"},
}

func toTime(dv any, t Type) (time.Time, error) {
	switch x := dv.(type) {
	case time.Time:
		return x, nil
	case string:
		s := strings.TrimSpace(x)
		for _, layout := range timeLayouts[t] {
			if ts, err := time.Parse(layout, s); err == nil {
				return ts, nil
			}
		}
		if t == Timestamptz {
			return time.Time{}, fmt.Errorf("%w: text is not a timestamptz with a UTC offset (RFC 3339)", ErrFormat)
		}
		return time.Time{}, fmt.Errorf("%w: text is not a valid %s in ISO 8601 form", ErrFormat, t)
	}
	return time.Time{}, mismatch(dv, t)
}

func toUUID(dv any) ([]byte, error) {
	switch x := dv.(type) {
	case []byte:
		if len(x) == 16 {
			return append([]byte{}, x...), nil
		}
		return toUUID(string(x))
	case string:
		s := strings.TrimSpace(x)
		s = strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
		s = strings.ReplaceAll(s, "-", "")
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != 16 {
			return nil, fmt.Errorf("%w: text is not a valid uuid", ErrFormat)
		}
		return b, nil
	}
	return nil, mismatch(dv, UUID)
}

func encodeJSON(t Type, v any) ([]byte, error) {
	if vr, ok := v.(driver.Valuer); ok {
		dv, err := vr.Value()
		if err != nil {
			return nil, fmt.Errorf("%w: %T.Value failed: %w", ErrFormat, v, err)
		}
		v = dv
	}
	var b []byte
	switch x := v.(type) {
	case nil:
		return nil, fmt.Errorf("%w: NULL has no plaintext encoding", ErrFormat)
	case []byte:
		b = append([]byte{}, x...)
	case json.RawMessage:
		b = append([]byte{}, x...)
	case string:
		b = []byte(x)
	default:
		m, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("%w: cannot encode %T as %s", ErrFormat, v, t)
		}
		b = m
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("%w: value is not valid JSON for %s", ErrFormat, t)
	}
	return b, nil
}
