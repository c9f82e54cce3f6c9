package kmspostgres

import (
	"database/sql/driver"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

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

// pkFits refuses a primary-key text that PostgreSQL would not store as
// given: longer than a varchar(n) (the server cuts trailing spaces
// silently), so that the context written is the context read.
func pkFits(text, typ string) error {
	n, ok := strings.CutPrefix(typ, "character varying(")
	if !ok {
		return nil
	}
	limit, err := strconv.Atoi(strings.TrimSuffix(n, ")"))
	if err != nil || utf8.RuneCountInString(text) <= limit {
		return nil
	}
	return fmt.Errorf("%w: the primary key is longer than %s; PostgreSQL would store it cut, and the row's context would not match", ErrFormat, typ)
}

// pkLabel renders a row's primary key for messages: "id=42, org=7".
func pkLabel(t *rewrite.Table, pk []string) string {
	parts := make([]string, len(pk))
	for i, v := range pk {
		parts[i] = t.PrimaryKey[i] + "=" + v
	}
	return strings.Join(parts, ", ")
}
