package bokbok

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
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

// ReadKeyFile reads a key from a file holding its text form (as "bokbok
// keygen" writes it), with any white space around it, such as the newline
// an editor adds, ignored. Its errors name the file and never show the
// file's contents. Keep key files private (chmod 600).
func ReadKeyFile(path string) (Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Key{}, fmt.Errorf("bokbok: reading a key: %w", err)
	}
	k, err := ParseKey(strings.TrimSpace(string(b)))
	clear(b)
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}
