# Independent reference for the golden vectors in blindindex_test.go: the
# blind_index gem's key hierarchy in Python hashlib/hmac, and argon2id from
# the PHC reference implementation (libargon2, which the gem's argon2-kdf
# bundles). Run: python3 testdata/reference.py
import ctypes, hmac, hashlib, struct, base64
lib = ctypes.CDLL("libargon2.so.1")
S=ctypes.c_size_t; P=ctypes.c_char_p; U=ctypes.c_uint32
lib.argon2id_hash_raw.argtypes=[U,U,U,P,S,P,S,ctypes.c_void_p,S]
def hkdf(ikm, salt, info, length, h):
    prk = hmac.new(salt, ikm, h).digest()
    t=b""; last=b""; i=1
    while len(t)<length:
        last = hmac.new(prk, last+info+bytes([i]), h).digest(); t+=last; i+=1
    return t[:length]
def pack(pieces):
    out = struct.pack("<I", len(pieces))
    for p in pieces:
        p=p.encode(); out += struct.pack("<Q", len(p)) + p
    return out
def index_key(master_hex, table, col):
    root = hkdf(bytes.fromhex(master_hex), table.encode(), b"\x7e"*32 + col.encode(), 32, hashlib.sha384)
    return hmac.new(root, pack([table,col,col]), hashlib.sha256).digest()
def argon2id(val, salt):
    out = ctypes.create_string_buffer(32)
    rc = lib.argon2id_hash_raw(3, 4096, 1, val, len(val), salt, len(salt), out, 32)
    assert rc==0, rc
    return base64.b64encode(out.raw).decode()
k = index_key("0"*64, "users", "email_bidx")
print("index_key", k.hex())
print("argon2id test@example.org", argon2id(b"test@example.org", k))
print("argon2id 123-45-6789", argon2id(b"123-45-6789", k))
k2 = index_key("0"*64, "users", "ssn_lookup")
print("index_key users.ssn_lookup", k2.hex())
print("hmac 123-45-6789", base64.b64encode(hmac.new(k2, b"123-45-6789", hashlib.sha256).digest()).decode())
