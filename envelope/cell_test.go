package envelope

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/c2sp/wycheproof"
)

var update = flag.Bool("update", false, "rewrite golden files")

func mustKey(t testing.TB, b byte) *CellKey {
	t.Helper()
	k, err := NewCellKey(bytes.Repeat([]byte{b}, DataKeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type goldenCell struct {
	Key       string `json:"key"`
	Nonce     string `json:"nonce"`
	Table     string `json:"table"`
	Column    string `json:"column"`
	Plaintext string `json:"plaintext"`
	Cell      string `json:"cell"`
}

// TestGoldenCells pins the version-1 cell format: a fixed key and nonce
// must give the same bytes forever, and those bytes must open.
func TestGoldenCells(t *testing.T) {
	path := filepath.Join("testdata", "cells_v1.json")
	inputs := []goldenCell{
		{Key: hex.EncodeToString(bytes.Repeat([]byte{0x01}, 32)), Nonce: "000102030405060708090a0b", Table: "users", Column: "email", Plaintext: hex.EncodeToString([]byte("ada@example.com"))},
		{Key: hex.EncodeToString(bytes.Repeat([]byte{0x02}, 32)), Nonce: "ffffffffffffffffffffffff", Table: "billing.invoices", Column: "amount", Plaintext: ""},
		{Key: "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", Nonce: "cafebabefacedbaddecaf888", Table: "t", Column: "c", Plaintext: hex.EncodeToString(bytes.Repeat([]byte{0xAB}, 100))},
	}
	if *update {
		for i := range inputs {
			g := &inputs[i]
			k, _ := hex.DecodeString(g.Key)
			n, _ := hex.DecodeString(g.Nonce)
			pt, _ := hex.DecodeString(g.Plaintext)
			ck, err := NewCellKey(k)
			if err != nil {
				t.Fatal(err)
			}
			g.Cell = hex.EncodeToString(ck.sealWithNonce(n, CellAAD(g.Table, g.Column), pt))
		}
		b, _ := json.MarshalIndent(inputs, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var golden []goldenCell
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	if len(golden) != len(inputs) {
		t.Fatalf("golden file has %d vectors, want %d", len(golden), len(inputs))
	}
	for i, g := range golden {
		k, _ := hex.DecodeString(g.Key)
		n, _ := hex.DecodeString(g.Nonce)
		pt, _ := hex.DecodeString(g.Plaintext)
		ck, err := NewCellKey(k)
		if err != nil {
			t.Fatal(err)
		}
		got := hex.EncodeToString(ck.sealWithNonce(n, CellAAD(g.Table, g.Column), pt))
		if got != g.Cell {
			t.Errorf("vector %d: seal = %s, golden %s (the cell format changed)", i, got, g.Cell)
		}
		cell, _ := hex.DecodeString(g.Cell)
		if cell[0] != CellVersion1 || !bytes.Equal(cell[1:13], n) {
			t.Errorf("vector %d: header is not version byte + nonce", i)
		}
		back, err := ck.Open(CellAAD(g.Table, g.Column), cell)
		if err != nil || !bytes.Equal(back, pt) {
			t.Errorf("vector %d: open = %x, %v", i, back, err)
		}
	}
}

func TestCellAADLayout(t *testing.T) {
	got := hex.EncodeToString(CellAAD("users", "email"))
	want := "01" + "0005" + hex.EncodeToString([]byte("users")) + "0005" + hex.EncodeToString([]byte("email"))
	if got != want {
		t.Fatalf("CellAAD = %s, want %s", got, want)
	}
	// Length prefixes keep ("ab","c") and ("a","bc") apart.
	if bytes.Equal(CellAAD("ab", "c"), CellAAD("a", "bc")) {
		t.Fatal("AAD is ambiguous")
	}
}

func TestCellTamper(t *testing.T) {
	k := mustKey(t, 7)
	aad := CellAAD("users", "email")
	cell, err := k.Seal(aad, []byte("secret@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cell) != CellOverhead+len("secret@example.com") {
		t.Fatalf("cell length %d", len(cell))
	}
	cases := map[string]func() ([]byte, error){
		"wrong column": func() ([]byte, error) { return k.Open(CellAAD("users", "phone"), cell) },
		"wrong table":  func() ([]byte, error) { return k.Open(CellAAD("admins", "email"), cell) },
		"wrong key":    func() ([]byte, error) { return mustKey(t, 8).Open(aad, cell) },
		"truncated":    func() ([]byte, error) { return k.Open(aad, cell[:len(cell)-1]) },
		"too short":    func() ([]byte, error) { return k.Open(aad, cell[:CellOverhead-1]) },
		"empty":        func() ([]byte, error) { return k.Open(aad, nil) },
		"version":      func() ([]byte, error) { c := bytes.Clone(cell); c[0] = 2; return k.Open(aad, c) },
	}
	for i := 0; i < len(cell)*8; i++ {
		c := bytes.Clone(cell)
		c[i/8] ^= 1 << (i % 8)
		if _, err := k.Open(aad, c); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("bit flip %d: err = %v, want ErrDecrypt", i, err)
		}
	}
	for name, f := range cases {
		if pt, err := f(); !errors.Is(err, ErrDecrypt) || pt != nil {
			t.Errorf("%s: got %q, %v; want ErrDecrypt", name, pt, err)
		}
	}
	if pt, err := k.Open(aad, cell); err != nil || string(pt) != "secret@example.com" {
		t.Fatalf("round trip: %q, %v", pt, err)
	}
}

func TestCellNoncesDiffer(t *testing.T) {
	k := mustKey(t, 1)
	a, _ := k.Seal(nil, []byte("x"))
	b, _ := k.Seal(nil, []byte("x"))
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same plaintext are equal: nonce is not random")
	}
}

func TestNewCellKeyLength(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33} {
		if _, err := NewCellKey(make([]byte, n)); !errors.Is(err, ErrFormat) {
			t.Errorf("key of %d bytes: err = %v", n, err)
		}
	}
}

type wycheFile struct {
	TestGroups []struct {
		KeySize int `json:"keySize"`
		IvSize  int `json:"ivSize"`
		TagSize int `json:"tagSize"`
		Tests   []struct {
			TcID   int    `json:"tcId"`
			Key    string `json:"key"`
			IV     string `json:"iv"`
			AAD    string `json:"aad"`
			Msg    string `json:"msg"`
			CT     string `json:"ct"`
			Tag    string `json:"tag"`
			Result string `json:"result"`
		} `json:"tests"`
	} `json:"testGroups"`
}

// TestWycheproofAESGCM runs the Wycheproof AES-GCM vectors that fit our
// parameters (256-bit key, 96-bit nonce, 128-bit tag) through the same
// AEAD construction CellKey uses.
func TestWycheproofAESGCM(t *testing.T) {
	raw, err := fs.ReadFile(wycheproof.TestVectors, "aes_gcm_test.json")
	if err != nil {
		t.Fatal(err)
	}
	var f wycheFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	ran := 0
	for _, g := range f.TestGroups {
		if g.KeySize != 256 || g.IvSize != 96 || g.TagSize != 128 {
			continue
		}
		for _, tc := range g.Tests {
			key, _ := hex.DecodeString(tc.Key)
			ck, err := NewCellKey(key)
			if err != nil {
				t.Fatalf("tc %d: %v", tc.TcID, err)
			}
			iv, _ := hex.DecodeString(tc.IV)
			aad, _ := hex.DecodeString(tc.AAD)
			msg, _ := hex.DecodeString(tc.Msg)
			ct, _ := hex.DecodeString(tc.CT)
			tag, _ := hex.DecodeString(tc.Tag)
			cell := append(append(append([]byte{CellVersion1}, iv...), ct...), tag...)
			pt, err := ck.Open(aad, cell)
			switch tc.Result {
			case "valid":
				if err != nil || !bytes.Equal(pt, msg) {
					t.Errorf("tc %d: valid vector failed: %v", tc.TcID, err)
				}
				if sealed := ck.sealWithNonce(iv, aad, msg); !bytes.Equal(sealed, cell) {
					t.Errorf("tc %d: seal differs", tc.TcID)
				}
			case "invalid":
				if err == nil {
					t.Errorf("tc %d: invalid vector opened", tc.TcID)
				}
			}
			ran++
		}
	}
	if ran < 50 {
		t.Fatalf("only %d Wycheproof vectors ran", ran)
	}
	// Sanity: the primitive underneath is the standard library's.
	b, _ := aes.NewCipher(make([]byte, 32))
	if _, err := cipher.NewGCM(b); err != nil {
		t.Fatal(err)
	}
}

func FuzzCellOpen(f *testing.F) {
	k := mustKey(f, 3)
	aad := CellAAD("users", "email")
	// A fixed nonce: fuzz workers are separate processes and must agree
	// on which cell is the authentic one.
	good := k.sealWithNonce(bytes.Repeat([]byte{9}, nonceSize), aad, []byte("hello"))
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add(bytes.Repeat([]byte{1}, CellOverhead))
	f.Fuzz(func(t *testing.T, cell []byte) {
		pt, err := k.Open(aad, cell)
		if err == nil {
			// Only the authentic cell may open.
			if !bytes.Equal(cell, good) || string(pt) != "hello" {
				t.Fatalf("forged cell opened: %x", cell)
			}
		} else if !errors.Is(err, ErrDecrypt) {
			t.Fatalf("error %v is not ErrDecrypt", err)
		}
	})
}

func TestOpenInPlace(t *testing.T) {
	dk, _ := NewDataKey()
	ck, _ := NewCellKey(dk)
	aad := CellAAD("users", "email")
	cell, err := ck.Seal(aad, []byte("in place"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := ck.Open(aad, cell)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ck.OpenInPlace(aad, append([]byte(nil), cell...))
	if err != nil || string(got) != string(want) {
		t.Fatalf("OpenInPlace = %q, %v; want %q", got, err, want)
	}
	bad := append([]byte(nil), cell...)
	bad[len(bad)-1] ^= 1
	if _, err := ck.OpenInPlace(aad, bad); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("tampered cell: %v", err)
	}
	if _, err := ck.OpenInPlace(aad, cell[:5]); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("short cell: %v", err)
	}
}
