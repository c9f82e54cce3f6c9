// Package gcpkmsfake is test support: an in-process gRPC server that
// implements Cloud KMS's Encrypt and Decrypt for symmetric keys, so that the
// real Google client can be tested where no Cloud KMS emulator is served.
// It does real AES-256-GCM with the additional authenticated data, checks
// and returns the CRC32C integrity fields, keeps key versions with a
// primary that rotation moves, and can be told to fail (unavailable,
// permission denied) or to be slow.
package gcpkmsfake

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Server is a fake Cloud KMS on a loopback port.
type Server struct {
	kmspb.UnimplementedKeyManagementServiceServer

	grpc *grpc.Server
	lis  net.Listener

	mu       sync.Mutex
	keys     map[string]*cryptoKey
	fail     codes.Code
	latency  time.Duration
	noDecryp map[string]bool

	// Encrypts and Decrypts count the requests served.
	Encrypts, Decrypts atomic.Int64
}

type cryptoKey struct {
	versions []cipher.AEAD // version n is versions[n-1]
	primary  int           // 1-based
}

// Start listens on 127.0.0.1 and serves until Close.
func Start() (*Server, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{grpc: grpc.NewServer(), lis: lis, keys: map[string]*cryptoKey{}, noDecryp: map[string]bool{}}
	kmspb.RegisterKeyManagementServiceServer(s.grpc, s)
	go s.grpc.Serve(lis)
	return s, nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Close stops the server.
func (s *Server) Close() { s.grpc.Stop() }

func newVersion() cipher.AEAD {
	var k [32]byte
	rand.Read(k[:])
	b, _ := aes.NewCipher(k[:])
	a, _ := cipher.NewGCM(b)
	return a
}

// CreateKey makes a crypto key (projects/…/cryptoKeys/…) with one version.
func (s *Server) CreateKey(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[name] = &cryptoKey{versions: []cipher.AEAD{newVersion()}, primary: 1}
}

// Rotate adds a version and makes it primary; older versions still decrypt.
func (s *Server) Rotate(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keys[name]
	k.versions = append(k.versions, newVersion())
	k.primary = len(k.versions)
	return k.primary
}

// SetFailure makes every request fail with code (codes.OK: work again).
func (s *Server) SetFailure(code codes.Code) {
	s.mu.Lock()
	s.fail = code
	s.mu.Unlock()
}

// SetLatency delays every request.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	s.latency = d
	s.mu.Unlock()
}

// DenyDecrypt makes Decrypt on a key answer PERMISSION_DENIED, as for a
// service account with only cloudkms.cryptoKeyVersions.useToEncrypt.
func (s *Server) DenyDecrypt(name string, deny bool) {
	s.mu.Lock()
	s.noDecryp[name] = deny
	s.mu.Unlock()
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b []byte) int64 { return int64(crc32.Checksum(b, castagnoli)) }

func (s *Server) enter(ctx context.Context) (*sync.Mutex, error) {
	s.mu.Lock()
	fail, lat := s.fail, s.latency
	s.mu.Unlock()
	if lat > 0 {
		select {
		case <-time.After(lat):
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if fail != codes.OK {
		return nil, status.Error(fail, "injected failure")
	}
	return &s.mu, nil
}

func checkCRC(field string, data []byte, sum *wrapperspb.Int64Value) error {
	if sum != nil && sum.Value != crc(data) {
		return status.Errorf(codes.InvalidArgument, "The checksum in field %s did not match the data in field %s.", field+"_crc32c", field)
	}
	return nil
}

// keyName strips a version suffix.
func keyName(name string) string {
	if i := strings.Index(name, "/cryptoKeyVersions/"); i >= 0 {
		return name[:i]
	}
	return name
}

// Encrypt seals with the primary version: ciphertext = uint32 version |
// nonce | GCM output.
func (s *Server) Encrypt(ctx context.Context, req *kmspb.EncryptRequest) (*kmspb.EncryptResponse, error) {
	s.Encrypts.Add(1)
	if _, err := s.enter(ctx); err != nil {
		return nil, err
	}
	if err := checkCRC("plaintext", req.Plaintext, req.PlaintextCrc32C); err != nil {
		return nil, err
	}
	if err := checkCRC("additional_authenticated_data", req.AdditionalAuthenticatedData, req.AdditionalAuthenticatedDataCrc32C); err != nil {
		return nil, err
	}
	s.mu.Lock()
	k := s.keys[keyName(req.Name)]
	var aead cipher.AEAD
	v := 0
	if k != nil {
		v = k.primary
		aead = k.versions[v-1]
	}
	s.mu.Unlock()
	if k == nil {
		return nil, status.Errorf(codes.NotFound, "CryptoKey %s not found.", req.Name)
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	ct := binary.BigEndian.AppendUint32(nil, uint32(v))
	ct = append(ct, nonce...)
	ct = aead.Seal(ct, nonce, req.Plaintext, req.AdditionalAuthenticatedData)
	return &kmspb.EncryptResponse{
		Name:                    keyName(req.Name) + "/cryptoKeyVersions/" + strconv.Itoa(v),
		Ciphertext:              ct,
		CiphertextCrc32C:        wrapperspb.Int64(crc(ct)),
		VerifiedPlaintextCrc32C: req.PlaintextCrc32C != nil,
		VerifiedAdditionalAuthenticatedDataCrc32C: req.AdditionalAuthenticatedDataCrc32C != nil,
	}, nil
}

// Decrypt opens with the version named in the ciphertext.
func (s *Server) Decrypt(ctx context.Context, req *kmspb.DecryptRequest) (*kmspb.DecryptResponse, error) {
	s.Decrypts.Add(1)
	if _, err := s.enter(ctx); err != nil {
		return nil, err
	}
	if err := checkCRC("ciphertext", req.Ciphertext, req.CiphertextCrc32C); err != nil {
		return nil, err
	}
	if err := checkCRC("additional_authenticated_data", req.AdditionalAuthenticatedData, req.AdditionalAuthenticatedDataCrc32C); err != nil {
		return nil, err
	}
	s.mu.Lock()
	k := s.keys[req.Name]
	deny := s.noDecryp[req.Name]
	var aead cipher.AEAD
	v := 0
	primary := false
	if k != nil && len(req.Ciphertext) >= 4 {
		v = int(binary.BigEndian.Uint32(req.Ciphertext))
		if v >= 1 && v <= len(k.versions) {
			aead = k.versions[v-1]
			primary = v == k.primary
		}
	}
	s.mu.Unlock()
	switch {
	case k == nil:
		return nil, status.Errorf(codes.NotFound, "CryptoKey %s not found.", req.Name)
	case deny:
		return nil, status.Errorf(codes.PermissionDenied, "Permission 'cloudkms.cryptoKeyVersions.useToDecrypt' denied on resource '%s'.", req.Name)
	case aead == nil || len(req.Ciphertext) < 4+aead.NonceSize():
		return nil, status.Error(codes.InvalidArgument, "Decryption failed: the ciphertext is invalid.")
	}
	n := aead.NonceSize()
	pt, err := aead.Open(nil, req.Ciphertext[4:4+n], req.Ciphertext[4+n:], req.AdditionalAuthenticatedData)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "Decryption failed: verify that 'name' refers to the correct CryptoKey.")
	}
	return &kmspb.DecryptResponse{Plaintext: pt, PlaintextCrc32C: wrapperspb.Int64(crc(pt)), UsedPrimary: primary}, nil
}

// KeyName returns a realistic crypto key name.
func KeyName(project, ring, key string) string {
	return fmt.Sprintf("projects/%s/locations/global/keyRings/%s/cryptoKeys/%s", project, ring, key)
}
