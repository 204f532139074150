package bokbok

import (
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"hash"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/blake2b"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/nacl/secretbox"
)

// The cryptographic building blocks of secure mode, each a thin layer over
// golang.org/x/crypto, so that the protocol files read as protocol flow:
//
//   - the Noise cipher suite 25519_ChaChaPoly_BLAKE2b: key pairs and DH,
//     ChaCha20-Poly1305 with Noise's nonces, BLAKE2b and its HKDF
//     (PROTOCOL.md §15; the handshake state machine is in noise.go);
//   - sealing and opening records with NaCl secretbox, and their nonces
//     (PROTOCOL.md §16; the record stream is in record.go);
//   - key derivation: passphrases with argon2id (PROTOCOL.md §17), and the
//     dummy keys of unknown users (§15);
//   - wiping keys once they are no longer needed.

// --- the Noise cipher suite --------------------------------------------------

const (
	noiseProtocolName = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2b"
	noiseHashLen      = blake2b.Size // 64
	noiseDHLen        = curve25519.PointSize
	noiseTagLen       = chacha20poly1305.Overhead
)

var errNoiseDecrypt = errors.New("noise: message failed authentication")

// noiseKeyPair is the suite's GENERATE_KEYPAIR, into priv and pub: priv is
// random, or a copy of fixed if that is set (tests pass fixed keys).
func noiseKeyPair(priv, pub, fixed *[32]byte) error {
	if fixed != nil {
		*priv = *fixed
	} else if _, err := rand.Read(priv[:]); err != nil {
		return err
	}
	p, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		return err
	}
	copy(pub[:], p)
	return nil
}

// noiseDH is the suite's DH; the caller wipes the result. X25519 rejects
// low-order points (an all-zero shared secret), so a peer cannot force a
// known shared secret.
func noiseDH(priv, pub *[32]byte) ([]byte, error) {
	dh, err := curve25519.X25519(priv[:], pub[:])
	if err != nil {
		return nil, errors.New("noise: the peer's ephemeral key is a low-order point")
	}
	return dh, nil
}

// newBlake2b is the suite's hash, BLAKE2b with HASHLEN 64.
func newBlake2b() hash.Hash {
	h, _ := blake2b.New512(nil)
	return h
}

// hkdf is the specification's HKDF(chaining_key, input_key_material,
// num_outputs) with HMAC-BLAKE2b, returning three outputs (callers that
// need two ignore the third).
func hkdf(ck, ikm []byte) (o1, o2, o3 [noiseHashLen]byte) {
	mac := hmac.New(newBlake2b, ck)
	mac.Write(ikm)
	temp := mac.Sum(nil)
	defer clear(temp)
	mac = hmac.New(newBlake2b, temp)
	mac.Write([]byte{1})
	mac.Sum(o1[:0])
	mac.Reset()
	mac.Write(o1[:])
	mac.Write([]byte{2})
	mac.Sum(o2[:0])
	mac.Reset()
	mac.Write(o2[:])
	mac.Write([]byte{3})
	mac.Sum(o3[:0])
	return
}

// noiseNonce is ChaChaPoly's nonce: 4 zero bytes, then n little-endian.
func noiseNonce(n uint64) []byte {
	var nonce [chacha20poly1305.NonceSize]byte
	binary.LittleEndian.PutUint64(nonce[4:], n)
	return nonce[:]
}

// noiseEncrypt is the suite's ENCRYPT(k, n, ad, plaintext), appended to
// out: the ciphertext, then the 16-byte tag.
func noiseEncrypt(out []byte, k *[32]byte, n uint64, ad, plaintext []byte) []byte {
	aead, _ := chacha20poly1305.New(k[:])
	return aead.Seal(out, noiseNonce(n), plaintext, ad)
}

// noiseDecrypt is the suite's DECRYPT(k, n, ad, ciphertext).
func noiseDecrypt(k *[32]byte, n uint64, ad, ciphertext []byte) ([]byte, error) {
	aead, _ := chacha20poly1305.New(k[:])
	plaintext, err := aead.Open(nil, noiseNonce(n), ciphertext, ad)
	if err != nil {
		return nil, errNoiseDecrypt
	}
	return plaintext, nil
}

// --- records: NaCl secretbox ---------------------------------------------------

// recordOverhead is what sealing adds to a record's plaintext: the 16-byte
// Poly1305 tag, which comes first, before the ciphertext.
const recordOverhead = secretbox.Overhead

// ErrNonceExhausted reports that a direction of a secure connection has
// sent or received 2^64-1 records, the most its nonce counter allows; the
// connection fails rather than ever reuse a nonce.
var ErrNonceExhausted = errors.New("bokbok: record counter exhausted")

// maxRecordCounter is the last counter value never used: a record is never
// sealed or opened with it, so the counter cannot wrap.
const maxRecordCounter = ^uint64(0)

// recordNonce builds a record's 24-byte nonce: the counter n big-endian,
// the direction byte, then 15 zero bytes.
func recordNonce(n uint64, dir byte) *[24]byte {
	var nonce [24]byte
	binary.BigEndian.PutUint64(nonce[:8], n)
	nonce[8] = dir
	return &nonce
}

// sealRecord appends plain sealed as record n of direction dir under key:
// the Poly1305 tag, then plain encrypted with XSalsa20, recordOverhead
// bytes longer than plain in all. The caller keeps n below
// maxRecordCounter.
func sealRecord(out, plain []byte, key *Key, n uint64, dir byte) []byte {
	return secretbox.Seal(out, plain, recordNonce(n, dir), (*[32]byte)(key))
}

// openRecord appends to out the plaintext of sealed, opened as record n of
// direction dir under key, and reports whether it authenticated.
func openRecord(out, sealed []byte, key *Key, n uint64, dir byte) ([]byte, bool) {
	return secretbox.Open(out, sealed, recordNonce(n, dir), (*[32]byte)(key))
}

// --- key derivation --------------------------------------------------------------

// Argon2id parameters of PassphraseToKey: RFC 9106's second recommended
// option (t=3 passes, 64 MiB of memory, 4 lanes, 32-byte tag).
const (
	passphraseTime    = 3
	passphraseMemory  = 64 * 1024 // KiB
	passphraseThreads = 4
)

// PassphraseToKey derives a key from a passphrase with argon2id (RFC 9106,
// second recommended parameters: 3 passes over 64 MiB with 4 lanes), salted
// with the realm and the user name, so that one passphrase gives different
// keys for different users and deployments. It takes a noticeable fraction
// of a second and 64 MiB of memory, by design.
//
// A passphrase is weaker than a generated key: anyone who records a
// handshake can test passphrase guesses offline, at the cost of one argon2id
// run each, and people choose guessable passphrases. Prefer GenerateKey;
// use passphrases where a person must be able to type the secret, and make
// them long.
func PassphraseToKey(passphrase, realm, user string) Key {
	tag := argon2.IDKey([]byte(passphrase), passphraseSalt(realm, user),
		passphraseTime, passphraseMemory, passphraseThreads, KeySize)
	var k Key
	copy(k[:], tag)
	clear(tag)
	return k
}

// passphraseSalt is BLAKE2b-256 of a domain string and the length-prefixed
// realm and user name.
func passphraseSalt(realm, user string) []byte {
	h, _ := blake2b.New256(nil)
	h.Write([]byte("bokbok passphrase v1\x00"))
	for _, s := range []string{realm, user} {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(s))))
		h.Write([]byte(s))
	}
	return h.Sum(nil)
}

// dummyKey derives the key tried in candidate slot slot of a user who has
// fewer keys than the server tries (an unknown user has none): keyed by a
// server-local secret, so nobody can know it.
func dummyKey(secret *Key, user string, slot int) Key {
	h, _ := blake2b.New256(secret[:])
	h.Write([]byte("bokbok unknown user\x00"))
	h.Write([]byte{byte(slot)})
	h.Write([]byte(user))
	var k Key
	h.Sum(k[:0])
	return k
}

// --- wiping --------------------------------------------------------------------

// wipeKeys overwrites keys with zeros once they are no longer needed.
func wipeKeys(keys ...*Key) {
	for _, k := range keys {
		clear(k[:])
	}
}
