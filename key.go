package bokbok

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/blake2b"
)

// KeySize is the size of a Key in bytes.
const KeySize = 32

// Key is a 32-byte pre-shared key: a client proves it knows the key of the
// user it claims to be, and the server proves it knows it too. Make one with
// GenerateKey (best) or PassphraseToKey.
//
// Its text form, for configuration files, is standard base64 (44
// characters, as WireGuard keys are); see ParseKey and Key.MarshalText. A
// Key prints as "bokbok.Key(redacted)" with %v and %s, so that logging a
// configuration does not leak it.
type Key [KeySize]byte

// GenerateKey returns a new random key from crypto/rand.
func GenerateKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, fmt.Errorf("bokbok: generating a key: %w", err)
	}
	return k, nil
}

// ParseKey parses a key's text form: 44 characters of standard base64 that
// decode to 32 bytes. Surrounding white space is not allowed; trim it first.
func ParseKey(s string) (Key, error) {
	var k Key
	if err := k.UnmarshalText([]byte(s)); err != nil {
		return Key{}, err
	}
	return k, nil
}

// MarshalText returns the key's text form.
func (k Key) MarshalText() ([]byte, error) {
	out := make([]byte, base64.StdEncoding.EncodedLen(KeySize))
	base64.StdEncoding.Encode(out, k[:])
	return out, nil
}

// UnmarshalText parses a key's text form into k.
func (k *Key) UnmarshalText(text []byte) error {
	want := base64.StdEncoding.EncodedLen(KeySize)
	if len(text) != want {
		return fmt.Errorf("bokbok: bad key: %d characters, want %d (standard base64 of 32 bytes, as printed by GenerateKey's MarshalText)", len(text), want)
	}
	var buf [KeySize + 2]byte
	n, err := base64.StdEncoding.Strict().Decode(buf[:], text)
	if err != nil {
		return fmt.Errorf("bokbok: bad key: not standard base64: %v", err)
	}
	if n != KeySize {
		return fmt.Errorf("bokbok: bad key: decodes to %d bytes, want %d", n, KeySize)
	}
	copy(k[:], buf[:KeySize])
	clear(buf[:])
	return nil
}

const redactedKey = "bokbok.Key(redacted)"

// String returns "bokbok.Key(redacted)": keys stay out of logs. Use
// MarshalText for the key's text form.
func (k Key) String() string { return redactedKey }

// Format prints "bokbok.Key(redacted)" for every verb (%v, %x, %#v, ...),
// so that printing a configuration does not leak the key.
func (k Key) Format(f fmt.State, verb rune) { io.WriteString(f, redactedKey) }

// LogValue keeps the key out of log/slog records (whose handlers would
// otherwise use MarshalText).
func (k Key) LogValue() slog.Value { return slog.StringValue(redactedKey) }

// Equal reports whether k and other are the same key, in constant time.
func (k Key) Equal(other Key) bool { return subtle.ConstantTimeCompare(k[:], other[:]) == 1 }

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
