package envelope

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
)

// Cell format, version 1 (documented in the README):
//
//	offset  size  field
//	0       1     format version, 0x01
//	1       12    GCM nonce, random
//	13      n     AES-256-GCM ciphertext of the typed plaintext
//	13+n    16    GCM tag
//
// The associated data binds the cell to its place:
//
//	0x01 | uint16be len(table) | table | uint16be len(column) | column
//
// so a cell copied to another column or table does not open.
const (
	CellVersion1 = 0x01
	nonceSize    = 12
	tagSize      = 16
	// CellOverhead is what sealing adds to a plaintext.
	CellOverhead = 1 + nonceSize + tagSize
)

// CellKey is an unwrapped data key ready to seal and open cells. It is safe
// for concurrent use.
type CellKey struct {
	aead cipher.AEAD
}

// NewCellKey prepares a 32-byte data key for use.
func NewCellKey(dataKey []byte) (*CellKey, error) {
	if len(dataKey) != DataKeySize {
		return nil, fmt.Errorf("%w: data key is %d bytes, want %d", ErrFormat, len(dataKey), DataKeySize)
	}
	block, err := aes.NewCipher(dataKey)
	if err != nil {
		return nil, fmt.Errorf("kmspostgres: preparing data key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("kmspostgres: preparing data key: %w", err)
	}
	return &CellKey{aead: aead}, nil
}

// CellAAD returns the associated data that binds a cell to table.column.
func CellAAD(table, column string) []byte {
	aad := make([]byte, 0, 5+len(table)+len(column))
	aad = append(aad, CellVersion1)
	aad = binary.BigEndian.AppendUint16(aad, uint16(len(table)))
	aad = append(aad, table...)
	aad = binary.BigEndian.AppendUint16(aad, uint16(len(column)))
	return append(aad, column...)
}

// Seal encrypts plaintext into a version-1 cell bound to aad (see CellAAD).
func (k *CellKey) Seal(aad, plaintext []byte) ([]byte, error) {
	var nonce [nonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("kmspostgres: reading random nonce: %w", err)
	}
	return k.sealWithNonce(nonce[:], aad, plaintext), nil
}

func (k *CellKey) sealWithNonce(nonce, aad, plaintext []byte) []byte {
	out := make([]byte, 1+nonceSize, CellOverhead+len(plaintext))
	out[0] = CellVersion1
	copy(out[1:], nonce)
	return k.aead.Seal(out, nonce, plaintext, aad)
}

// Open decrypts a cell sealed under aad. Every failure, short of an unknown
// format version, is ErrDecrypt.
func (k *CellKey) Open(aad, cell []byte) ([]byte, error) {
	return k.open(nil, aad, cell)
}

// OpenInPlace is Open decrypting into the cell's own bytes, which it
// overwrites: for a cell the caller owns and does not need afterwards.
func (k *CellKey) OpenInPlace(aad, cell []byte) ([]byte, error) {
	if len(cell) < CellOverhead {
		return k.open(nil, aad, cell)
	}
	return k.open(cell[1+nonceSize:1+nonceSize], aad, cell)
}

func (k *CellKey) open(dst, aad, cell []byte) ([]byte, error) {
	if len(cell) < CellOverhead {
		return nil, fmt.Errorf("%w: cell is %d bytes, shorter than the %d-byte minimum", ErrDecrypt, len(cell), CellOverhead)
	}
	if cell[0] != CellVersion1 {
		return nil, fmt.Errorf("%w: unknown cell format version %d", ErrDecrypt, cell[0])
	}
	pt, err := k.aead.Open(dst, cell[1:1+nonceSize], cell[1+nonceSize:], aad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}
