package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmspostgres/kmspostgres/internal/testenv"
)

func TestSqlxExample(t *testing.T) {
	dsn := testenv.DatabaseURL(t)
	t.Setenv("KMS_KEY_ID", "insecure-test-key")
	path := filepath.Join(t.TempDir(), "schema.yaml")
	if err := os.WriteFile(path, schemaMap, 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), &out, dsn+"&search_path=public", path); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Grete Weiss", "DE89370400440532013000", "1975-02-14", "in France: Luc Martin", "wrapped data key: v1:"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
}
