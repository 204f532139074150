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

// String returns the sturdyref's URI.
func (s Sturdyref) String() string {
	var u url.URL
	if s.Addr.Network == "unix" {
		u.Scheme = "bokbok+unix"
		u.Path = s.Addr.Address + "/s/" + swissText(s.Swiss)
	} else {
		u.Scheme = "bokbok"
		u.Host = s.Addr.Address
		u.Path = "/s/" + swissText(s.Swiss)
	}
	if s.Realm != "" {
		u.RawQuery = url.Values{"realm": {s.Realm}}.Encode()
	}
	return u.String()
}

func swissText(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// ParseSturdyref parses a sturdyref URI; errors say what is wrong with it.
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
	path := u.Path
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
	i := strings.LastIndex(path, "/s/")
	if i < 0 {
		return bad("no /s/SWISS at the end")
	}
	sock, text := path[:i], path[i+len("/s/"):]
	if s.Addr.Network == "tcp" && sock != "" {
		return bad("a path before /s/ (only bokbok+unix has one)")
	}
	if u.Scheme == "bokbok+unix" {
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
	// url.URL.Query would silently drop malformed pairs (such as a bad
	// escape or a ';'), and with them an unknown parameter or the realm.
	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("malformed query: %v", err)
	}
	for k, vs := range query {
		if k != "realm" || len(vs) != 1 {
			return bad("unknown or repeated query parameter %q", k)
		}
		s.Realm = vs[0]
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

// MarshalText returns the URI, so sturdyrefs can be fields of JSON or
// other text formats.
func (s Sturdyref) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

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
