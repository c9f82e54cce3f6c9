package kmspostgres

import (
	"strings"
	"testing"
)

func TestSplitDSN(t *testing.T) {
	cases := []struct {
		name, dsn, rest, schema, err string
	}{
		{name: "url", dsn: "postgres://u@h/db?sslmode=disable&kms_schema=%2Fetc%2Fs.yaml", rest: "postgres://u@h/db?sslmode=disable", schema: "/etc/s.yaml"},
		{name: "url without", dsn: "postgresql://u@h/db", rest: "postgresql://u@h/db"},
		{name: "url typo", dsn: "postgres://u@h/db?kms_shema=s.yaml", err: "unknown DSN parameter kms_shema; kmspostgres knows: kms_schema"},
		{name: "url other kms", dsn: "postgres://u@h/db?kms_schema=s.yaml&kms_key_id=x", err: "unknown DSN parameter kms_key_id"},
		{name: "url upper", dsn: "postgres://u@h/db?KMS_SCHEMA=s.yaml", err: "unknown DSN parameter KMS_SCHEMA"},
		{name: "kv", dsn: "host=h kms_schema=/s.yaml dbname=db", rest: "host=h dbname=db", schema: "/s.yaml"},
		{name: "kv spaces", dsn: "host=h kms_schema = /s.yaml", rest: "host=h", schema: "/s.yaml"},
		{name: "kv quoted", dsn: `kms_schema='/my dir/it\'s.yaml' host=h`, rest: "host=h", schema: "/my dir/it's.yaml"},
		{name: "kv typo", dsn: "host=h kms_shema=s.yaml", err: "unknown DSN parameter kms_shema"},
		{name: "kv in quoted value", dsn: "host=h password='a kms_x=1' kms_schema=s", rest: "host=h password='a kms_x=1'", schema: "s"},
		{name: "kv without", dsn: "host=h dbname=db", rest: "host=h dbname=db"},
		{name: "empty", dsn: "", rest: ""},
		{name: "kv unterminated", dsn: "password='abc", err: "unterminated quoted value of password"},
		{name: "kv no equals", dsn: "host=h secret", err: "without \"=\""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rest, schema, err := splitDSN(tc.dsn)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "abc") || strings.Contains(err.Error(), "secret") {
					t.Fatalf("error quotes the DSN: %v", err)
				}
				return
			}
			if err != nil || rest != tc.rest || schema != tc.schema {
				t.Fatalf("got (%q, %q, %v), want (%q, %q)", rest, schema, err, tc.rest, tc.schema)
			}
		})
	}
}
