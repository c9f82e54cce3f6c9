package envelope

import (
	"fmt"
	"testing"
)

func BenchmarkCell(b *testing.B) {
	k := mustKey(b, 9)
	aad := CellAAD("users", "email")
	for _, size := range []int{16, 1024, 64 * 1024} {
		pt := make([]byte, size)
		cell, _ := k.Seal(aad, pt)
		b.Run(fmt.Sprintf("Encrypt/%dB", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := k.Seal(aad, pt); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("Decrypt/%dB", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := k.Open(aad, cell); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkNewCellKey(b *testing.B) {
	key := make([]byte, DataKeySize)
	for b.Loop() {
		if _, err := NewCellKey(key); err != nil {
			b.Fatal(err)
		}
	}
}
