package ocap

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/bokbok-go/bokbok"
)

// Sturdyref is a printable, long-lived reference to one object on one
// host: the host's address and a swiss number, a random secret that names
// the object. Whoever holds a sturdyref holds the capability: Node.Enliven
// turns it into a live Ref from any process, over a secure connection whose
// key is derived from the swiss number, so the holder needs no account on
// the host and reaches that one object and nothing else. Treat a sturdyref
// like a password: share it only with those who may use the object.
//
// Its text form is a URI (PROTOCOL.md §20):
//
//	bokbok://HOST:PORT/s/SWISS             over TCP
//	bokbok+unix:///abs/path.sock/s/SWISS   over a Unix socket
//
// with an optional ?realm=REALM when the host's bokbok.Config.Realm is not
// empty. SWISS is the swiss number in unpadded base64url.
type Sturdyref struct {
	Addr  bokbok.Addr // where the host listens
	Realm string      // the host's realm ("" by default)
	Swiss []byte      // the swiss number: at least 16 bytes (32 when made by Register)
}

// SwissSize is the size of the swiss numbers Register makes: 256 bits.
const SwissSize = 32

// minSwissSize is the smallest swiss number ParseSturdyref accepts.
const minSwissSize = 16

// sturdyUserPrefix starts the user names of connections opened to enliven
// a sturdyref.
const sturdyUserPrefix = "sturdy:"

// ErrUnknownSturdyref matches the error of enlivening a sturdyref the host
// does not know: revoked with Unregister, never registered, or registered
// on a host of another realm. (Over a new connection the host cannot tell
// these apart from a wrong key, by design; the error then also matches
// bokbok.ErrAuth.)
var ErrUnknownSturdyref = errors.New("ocap: the host does not know this sturdyref")

// IsZero reports whether s is the zero Sturdyref: no address, no realm and
// no swiss number, which is what Register returns when it fails.
func (s Sturdyref) IsZero() bool {
	return s.Addr == (bokbok.Addr{}) && s.Realm == "" && len(s.Swiss) == 0
}

// String returns the sturdyref's URI, or "" for the zero Sturdyref (so
// that a failed Register cannot print a URI that names nothing). The
// socket path and the realm are
// percent-encoded as RFC 3986 §2.1 describes: every byte but the
// unreserved characters (letters, digits, '-', '.', '_', '~') and, in the
// path, '/' becomes %XX with upper-case hex digits (a space is %20, '+'
// is %2B). In the host:port only '%' (of an IPv6 zone) is encoded, as %25.
func (s Sturdyref) String() string {
	if s.IsZero() {
		return ""
	}
	var b strings.Builder
	if s.Addr.Network == "unix" {
		b.WriteString("bokbok+unix://")
		b.WriteString(pctEncode(s.Addr.Address, "/"))
	} else {
		b.WriteString("bokbok://")
		b.WriteString(pctEncode(s.Addr.Address, ":[]"))
	}
	b.WriteString("/s/")
	b.WriteString(swissText(s.Swiss))
	if s.Realm != "" {
		b.WriteString("?realm=")
		b.WriteString(pctEncode(s.Realm, ""))
	}
	return b.String()
}

// isUnreserved reports whether c is an unreserved character of RFC 3986.
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// isPathChar reports whether c may stand for itself in the path of a
// URI (RFC 3986 §3.3: unreserved, sub-delims, ':', '@', and '/').
func isPathChar(c byte) bool {
	return isUnreserved(c) || strings.IndexByte("!$&'()*+,;=:@/", c) >= 0
}

// pctEncode percent-encodes every byte of s except the unreserved
// characters and those in keep, with upper-case hex digits.
func pctEncode(s, keep string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUnreserved(c) || strings.IndexByte(keep, c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

// pctDecode decodes %XX (hex digits of either case) in s, in which every
// other byte must be one that literal accepts.
func pctDecode(s string, literal func(byte) bool) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				end := min(i+3, len(s))
				return "", fmt.Errorf("bad percent-encoding %q", s[i:end])
			}
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		case literal(c):
			b.WriteByte(c)
		case c >= 0x80:
			return "", fmt.Errorf("byte 0x%02x must be percent-encoded", c)
		default:
			return "", fmt.Errorf("%q must be percent-encoded", c)
		}
	}
	return b.String(), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

func swissText(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// ParseSturdyref parses a sturdyref URI; errors say what is wrong with it.
// It decodes RFC 3986 percent-encoding (hex digits of either case) in the
// socket path and the realm. The realm may hold only unreserved characters
// and %XX: a '+' or a space there is refused rather than guessed at (the
// form encoding of HTML would read '+' as a space). The swiss number
// follows the last "/s/" of the path as written, so an encoded '/' (%2F)
// belongs to the socket path.
func ParseSturdyref(uri string) (Sturdyref, error) {
	bad := func(format string, args ...any) (Sturdyref, error) {
		return Sturdyref{}, fmt.Errorf("ocap: bad sturdyref %q: %s", redactSwiss(uri), fmt.Sprintf(format, args...))
	}
	u, err := url.Parse(uri)
	if err != nil {
		return bad("%v", err)
	}
	// Any '#' starts a fragment, also an empty one (which url.Parse drops).
	if u.User != nil || strings.Contains(uri, "#") || u.Opaque != "" {
		return bad("it has parts a sturdyref does not (user, fragment, or no //)")
	}
	var s Sturdyref
	switch u.Scheme {
	case "bokbok":
		if u.Host == "" {
			return bad("no host:port after bokbok://")
		}
		a, err := bokbok.ParseAddr(u.Host)
		if err != nil || a.Network != "tcp" {
			return bad("host %q is not host:port", u.Host)
		}
		s.Addr = a
	case "bokbok+unix":
		if u.Host != "" {
			return bad("bokbok+unix:// takes an absolute socket path (three slashes), not a host")
		}
	default:
		return bad("the scheme is %q, want bokbok or bokbok+unix", u.Scheme)
	}
	// The path and the query as written: url.Parse decodes the path, and
	// a separator must not be read where a "/" is data (%2F).
	rest, ok := strings.CutPrefix(uri[len(u.Scheme):], "://")
	if !ok {
		return bad("it has parts a sturdyref does not (user, fragment, or no //)")
	}
	rest, rawQuery, hasQuery := strings.Cut(rest, "?")
	rawAuth, rawPath := rest, ""
	if j := strings.IndexByte(rest, '/'); j >= 0 {
		rawAuth, rawPath = rest[:j], rest[j:]
	}
	if strings.Count(rawAuth, "%") != strings.Count(rawAuth, "%25") {
		return bad("percent-encoding in the host other than %%25 (the '%%' of an IPv6 zone)")
	}
	i := strings.LastIndex(rawPath, "/s/")
	if i < 0 {
		return bad("no /s/SWISS at the end")
	}
	rawSock, text := rawPath[:i], rawPath[i+len("/s/"):]
	if s.Addr.Network == "tcp" && rawSock != "" {
		return bad("a path before /s/ (only bokbok+unix has one)")
	}
	if u.Scheme == "bokbok+unix" {
		sock, err := pctDecode(rawSock, isPathChar)
		if err != nil {
			return bad("the socket path: %v", err)
		}
		if !strings.HasPrefix(sock, "/") || len(sock) < 2 {
			return bad("no absolute socket path before /s/")
		}
		s.Addr = bokbok.Addr{Network: "unix", Address: sock}
	}
	s.Swiss, err = base64.RawURLEncoding.Strict().DecodeString(text)
	if err != nil {
		return bad("the swiss number is not unpadded base64url")
	}
	if len(s.Swiss) < minSwissSize {
		return bad("the swiss number has %d bytes, want at least %d", len(s.Swiss), minSwissSize)
	}
	if hasQuery {
		if rawQuery == "" {
			return bad("an empty query (a sturdyref without a realm has none)")
		}
		seen := false
		for _, kv := range strings.Split(rawQuery, "&") {
			k, v, _ := strings.Cut(kv, "=")
			if k != "realm" || seen {
				return bad("unknown or repeated query parameter %q", k)
			}
			seen = true
			if s.Realm, err = pctDecode(v, isUnreserved); err != nil {
				return bad("malformed query: the realm: %v (RFC 3986 percent-encoding: a space is %%20, '+' is %%2B)", err)
			}
			if s.Realm == "" {
				return bad("an empty realm (a sturdyref without a realm has no query)")
			}
		}
	}
	if len(s.Realm) > 255 {
		return bad("the realm has %d bytes, want at most 255", len(s.Realm))
	}
	return s, nil
}

// redactSwiss hides what follows the last "/s/" of a URI (up to a query),
// so that an error about a sturdyref does not carry its secret into logs.
func redactSwiss(uri string) string {
	i := strings.LastIndex(uri, "/s/")
	if i < 0 {
		return uri
	}
	rest := uri[i+len("/s/"):]
	tail := ""
	if j := strings.IndexAny(rest, "?#"); j >= 0 {
		tail = rest[j:]
		rest = rest[:j]
	}
	if rest == "" {
		return uri
	}
	return uri[:i] + "/s/[swiss number hidden]" + tail
}

// ErrZeroSturdyref is the error of marshaling the zero Sturdyref.
var ErrZeroSturdyref = errors.New("ocap: the zero Sturdyref has no text form (was it returned by a failed Register?)")

// MarshalText returns the URI, so sturdyrefs can be fields of JSON or
// other text formats. It fails with ErrZeroSturdyref for the zero
// Sturdyref rather than write "", which UnmarshalText would not read
// back; a field that may hold no sturdyref is best a *Sturdyref with
// omitempty.
func (s Sturdyref) MarshalText() ([]byte, error) {
	if s.IsZero() {
		return nil, ErrZeroSturdyref
	}
	return []byte(s.String()), nil
}

// UnmarshalText parses a URI.
func (s *Sturdyref) UnmarshalText(b []byte) error {
	p, err := ParseSturdyref(string(b))
	if err != nil {
		return err
	}
	*s = p
	return nil
}

// newSwiss returns a fresh random swiss number.
func newSwiss() ([]byte, error) {
	b := make([]byte, SwissSize)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return b, nil
}

// sturdyID is the public name of a swiss number: the host finds the
// registration by it, and it is the user name (after "sturdy:") of the
// secure connection. HKDF-SHA256, no salt, info "bokbok sturdyref id",
// 16 bytes, unpadded base64url.
func sturdyID(swiss []byte) string {
	b, err := hkdf.Key(sha256.New, swiss, nil, "bokbok sturdyref id", 16)
	if err != nil {
		panic(err) // only for lengths hkdf cannot produce
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// sturdyKey is the pre-shared key of connections opened for a swiss
// number: HKDF-SHA256, no salt, info "bokbok sturdyref key", 32 bytes.
func sturdyKey(swiss []byte) bokbok.Key {
	b, err := hkdf.Key(sha256.New, swiss, nil, "bokbok sturdyref key", bokbok.KeySize)
	if err != nil {
		panic(err)
	}
	return bokbok.Key(b)
}
