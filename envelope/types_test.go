package envelope

import (
	"bytes"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"
)

type valuer struct{ v driver.Value }

func (v valuer) Value() (driver.Value, error) { return v.v, nil }

type myInt int32

func TestTypeRoundTrips(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		berlin = time.FixedZone("CET", 3600)
	}
	ts := time.Date(2024, 2, 29, 23, 59, 58, 123456789, berlin)
	big := "123456789012345678901234567890.000000000000000000001"
	cases := []struct {
		typ  Type
		in   any
		want any
	}{
		{Text, "héllo", "héllo"},
		{Text, "", ""},
		{Text, []byte("raw"), "raw"},
		{Bytea, []byte{0, 1, 2}, []byte{0, 1, 2}},
		{Bytea, []byte{}, []byte{}},
		{Bytea, `\x00ff`, []byte{0, 0xff}},
		{Smallint, int64(-32768), int64(-32768)},
		{Integer, myInt(7), int64(7)},
		{Integer, "42", int64(42)},
		{Bigint, int64(math.MaxInt64), int64(math.MaxInt64)},
		{Bigint, uint8(3), int64(3)},
		{Bigint, valuer{int64(9)}, int64(9)},
		{Bigint, float64(12), int64(12)},
		{Double, 0.1, 0.1},
		{Double, math.Inf(-1), math.Inf(-1)},
		{Double, "Infinity", math.Inf(1)},
		{Double, math.SmallestNonzeroFloat64, math.SmallestNonzeroFloat64},
		{Real, 0.1, float64(float32(0.1))},
		{Numeric, big, big},
		{Numeric, "1.50", "1.50"},
		{Numeric, "+1e3", "1000"},
		{Numeric, "-2.5E-3", "-0.0025"},
		{Numeric, "NaN", "NaN"},
		{Numeric, int64(-5), "-5"},
		{Numeric, 2.25, "2.25"},
		{Numeric, "-0", "0"},
		{Numeric, "007.10", "7.10"},
		{Boolean, true, true},
		{Boolean, "off", false},
		{Date, time.Date(1969, 12, 31, 23, 0, 0, 0, berlin), time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC)},
		{Date, "0001-01-01", time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Timestamp, ts, time.Date(2024, 2, 29, 23, 59, 58, 123456000, time.UTC)},
		{Timestamp, "2020-01-02 03:04:05.5", time.Date(2020, 1, 2, 3, 4, 5, 500000000, time.UTC)},
		{Timestamptz, ts, ts.Truncate(time.Microsecond).Local()},
		{Timestamptz, "2020-01-02T03:04:05.000001+02:00", time.Date(2020, 1, 2, 1, 4, 5, 1000, time.UTC).Local()},
		{Timestamptz, time.Date(1900, 1, 1, 0, 0, 0, 999, time.UTC), time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC).Local()},
		{Time, "13:14:15.123456", time.Date(0, 1, 1, 13, 14, 15, 123456000, time.UTC)},
		{Time, time.Date(2020, 5, 5, 23, 59, 59, 999999999, berlin), time.Date(0, 1, 1, 23, 59, 59, 999999000, time.UTC)},
		{UUID, "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{UUID, "{a0eebc999c0b4ef8bb6d6bb9bd380a11}", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{JSON, `{"b": 1, "a": [true]}`, []byte(`{"b": 1, "a": [true]}`)},
		{JSONB, map[string]int{"x": 1}, []byte(`{"x":1}`)},
		{JSONB, json.RawMessage(`null`), []byte(`null`)},
	}
	for _, c := range cases {
		b, err := c.typ.Encode(c.in)
		if err != nil {
			t.Errorf("%s.Encode(%#v): %v", c.typ, c.in, err)
			continue
		}
		got, err := c.typ.Decode(b)
		if err != nil {
			t.Errorf("%s.Decode: %v", c.typ, err)
			continue
		}
		if gt, ok := got.(time.Time); ok {
			wt := c.want.(time.Time)
			if !gt.Equal(wt) || gt.Location().String() != wt.Location().String() {
				t.Errorf("%s(%v) = %v (%v), want %v (%v)", c.typ, c.in, gt, gt.Location(), wt, wt.Location())
			}
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s(%#v) = %#v, want %#v", c.typ, c.in, got, c.want)
		}
	}
	// NaN does not compare equal; check its bits survive.
	b, _ := Double.Encode(math.NaN())
	if f, _ := Double.Decode(b); !math.IsNaN(f.(float64)) {
		t.Error("NaN did not survive")
	}
}

func TestTypeEncodeRejects(t *testing.T) {
	cases := []struct {
		typ Type
		in  any
	}{
		{Text, nil}, {Text, "nul\x00byte"}, {Text, "\xff"}, {Text, true},
		{Smallint, int64(40000)}, {Integer, int64(1) << 40}, {Bigint, 1.5}, {Bigint, "x"}, {Bigint, true},
		{Double, "abc"}, {Numeric, "1.2.3"}, {Numeric, "e5"}, {Numeric, "1e99999"}, {Numeric, true},
		{Boolean, "maybe"}, {Boolean, int64(1)}, {Date, "2020-13-01"}, {Timestamptz, "2020-01-01 00:00:00"},
		{UUID, "nope"}, {UUID, []byte{1, 2}}, {JSON, "{"}, {JSONB, make(chan int)}, {JSON, nil},
	}
	for _, c := range cases {
		if _, err := c.typ.Encode(c.in); !errors.Is(err, ErrFormat) {
			t.Errorf("%s.Encode(%#v) err = %v, want ErrFormat", c.typ, c.in, err)
		}
	}
}

func TestTypeDecodeRejectsWrongLength(t *testing.T) {
	for _, typ := range []Type{Bigint, Double, Boolean, Date, Timestamp, Timestamptz, Time, UUID} {
		if _, err := typ.Decode([]byte{1, 2, 3}); !errors.Is(err, ErrFormat) {
			t.Errorf("%s.Decode(3 bytes) err = %v", typ, err)
		}
	}
}

func TestParseType(t *testing.T) {
	for name, want := range map[string]Type{"TEXT": Text, "int8": Bigint, "double  precision": Double, "timestamp with time zone": Timestamptz, "decimal": Numeric} {
		if got, err := ParseType(name); err != nil || got != want {
			t.Errorf("ParseType(%q) = %v, %v", name, got, err)
		}
	}
	if _, err := ParseType("money"); err == nil {
		t.Error("money accepted")
	}
	for typ := Text; typ <= JSONB; typ++ {
		if back, err := ParseType(typ.String()); err != nil || back != typ {
			t.Errorf("%v does not round-trip through its name", typ)
		}
	}
}

func FuzzTypeDecode(f *testing.F) {
	f.Add(uint8(Bigint), []byte{0, 0, 0, 0, 0, 0, 0, 1})
	f.Add(uint8(UUID), bytes.Repeat([]byte{1}, 16))
	f.Fuzz(func(t *testing.T, typ uint8, b []byte) {
		tt := Type(typ%uint8(JSONB) + 1)
		v, err := tt.Decode(b)
		if err != nil {
			return
		}
		// Whatever decodes must encode back to the same bytes.
		again, err := tt.Encode(v)
		if tt == JSON || tt == JSONB {
			return // not validated on decode
		}
		if err != nil || !bytes.Equal(again, b) {
			if tt == Real || tt == Double {
				return // NaN payloads are not canonical
			}
			t.Fatalf("%s: %x decoded to %v, encoded back to %x (%v)", tt, b, v, again, err)
		}
	})
}
