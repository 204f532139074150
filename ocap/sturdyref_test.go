package ocap

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/bokbok-go/bokbok"
	"github.com/stretchr/testify/require"
)

// srSwiss returns n bytes that differ with seed, for sturdyrefs whose
// swiss number needs to be known in advance.
func srSwiss(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*37)
	}
	return b
}

// srSwiss32 is a swiss number whose text uses both characters of the
// base64url alphabet that plain base64 lacks ('-' and '_').
var srSwiss32 = append([]byte{0xfb, 0xff, 0xbf}, srSwiss(29, 7)...)

func TestSturdyrefURIRoundTrip(t *testing.T) {
	text := base64.RawURLEncoding.EncodeToString(srSwiss32)
	require.Contains(t, text, "-")
	require.Contains(t, text, "_")
	cases := []struct {
		name string
		s    Sturdyref
		uri  string // the expected text; "" to check only the round trip
	}{
		{
			name: "tcp",
			s:    Sturdyref{Addr: bokbok.Addr{Network: "tcp", Address: "127.0.0.1:7000"}, Swiss: srSwiss32},
			uri:  "bokbok://127.0.0.1:7000/s/" + text,
		},
		{
			name: "host name",
			s:    Sturdyref{Addr: bokbok.Addr{Network: "tcp", Address: "chat.example.org:443"}, Swiss: srSwiss32},
			uri:  "bokbok://chat.example.org:443/s/" + text,
		},
		{
			name: "ipv6",
			s:    Sturdyref{Addr: bokbok.Addr{Network: "tcp", Address: "[::1]:7000"}, Swiss: srSwiss32},
			uri:  "bokbok://[::1]:7000/s/" + text,
		},
		{
			name: "ipv6 full",
			s:    Sturdyref{Addr: bokbok.Addr{Network: "tcp", Address: "[2001:db8::42:1]:65535"}, Swiss: srSwiss32},
			uri:  "bokbok://[2001:db8::42:1]:65535/s/" + text,
		},
		{
			name: "ipv6 zone",
			s:    Sturdyref{Addr: bokbok.Addr{Network: "tcp", Address: "[fe80::1%eth0]:7000"}, Swiss: srSwiss32},
			uri:  "bokbok://[fe80::1%25eth0]:7000/s/" + text,
		},
		{
			name: "unix",
			s:    Sturdyref{Addr: bokbok.Addr{Network: "unix", Address: "/run/app.sock"}, Swiss: srSwiss32},
			uri:  "bokbok+unix:///run/app.sock/s/" + text,
		},
		{
			name: "unix path containing /s/",
			s:    Sturdyref{Addr: bokbok.Addr{Network: "unix", Address: "/tmp/s/s/app.sock"}, Swiss: srSwiss32},
			uri:  "bokbok+unix:///tmp/s/s/app.sock/s/" + text,
		},
		{
			name: "unix path ending in /s",
			s:    Sturdyref{Addr: bokbok.Addr{Network: "unix", Address: "/tmp/s"}, Swiss: srSwiss32},
			uri:  "bokbok+unix:///tmp/s/s/" + text,
		},
		{
			name: "unix path with characters to escape",
			s:    Sturdyref{Addr: bokbok.Addr{Network: "unix", Address: "/run/my app/a?b#c%d/ü.sock"}, Swiss: srSwiss32},
			uri:  "bokbok+unix:///run/my%20app/a%3Fb%23c%25d/%C3%BC.sock/s/" + text,
		},
		{
			name: "unix path with sub-delims",
			s:    Sturdyref{Addr: bokbok.Addr{Network: "unix", Address: "/run/a+b:c@d=e;f,g!h$i&j'k(l)m*n~o.sock"}, Swiss: srSwiss32},
			uri:  "bokbok+unix:///run/a%2Bb%3Ac%40d%3De%3Bf%2Cg%21h%24i%26j%27k%28l%29m%2An~o.sock/s/" + text,
		},
		{
			name: "realm",
			s:    Sturdyref{Addr: bokbok.Addr{Network: "tcp", Address: "127.0.0.1:7000"}, Realm: "chat", Swiss: srSwiss32},
			uri:  "bokbok://127.0.0.1:7000/s/" + text + "?realm=chat",
		},
		{
			name: "realm to escape",
			s: Sturdyref{
				Addr:  bokbok.Addr{Network: "tcp", Address: "127.0.0.1:7000"},
				Realm: "my realm/&x=y?#%+é\x00",
				Swiss: srSwiss32,
			},
			uri: "bokbok://127.0.0.1:7000/s/" + text + "?realm=my%20realm%2F%26x%3Dy%3F%23%25%2B%C3%A9%00",
		},
		{
			name: "unix and realm",
			s:    Sturdyref{Addr: bokbok.Addr{Network: "unix", Address: "/tmp/s/x.sock"}, Realm: "a b", Swiss: srSwiss32},
			uri:  "bokbok+unix:///tmp/s/x.sock/s/" + text + "?realm=a%20b",
		},
		{
			name: "realm of every byte",
			s:    Sturdyref{Addr: bokbok.Addr{Network: "tcp", Address: "h:1"}, Realm: srEveryByte(1, 255), Swiss: srSwiss32},
		},
		{
			name: "realm of unreserved characters",
			s:    Sturdyref{Addr: bokbok.Addr{Network: "tcp", Address: "h:1"}, Realm: "AZaz09-._~", Swiss: srSwiss32},
			uri:  "bokbok://h:1/s/" + text + "?realm=AZaz09-._~",
		},
		{
			name: "longest realm",
			s:    Sturdyref{Addr: bokbok.Addr{Network: "tcp", Address: "h:1"}, Realm: strings.Repeat("r", 255), Swiss: srSwiss32},
		},
		{
			name: "shortest swiss",
			s:    Sturdyref{Addr: bokbok.Addr{Network: "tcp", Address: "h:1"}, Swiss: srSwiss(minSwissSize, 1)},
		},
		{
			name: "long swiss",
			s:    Sturdyref{Addr: bokbok.Addr{Network: "tcp", Address: "h:1"}, Swiss: srSwiss(100, 2)},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			uri := c.s.String()
			if c.uri != "" {
				require.Equal(t, c.uri, uri)
			}
			got, err := ParseSturdyref(uri)
			require.NoError(t, err, uri)
			require.Equal(t, c.s, got, uri)
			require.Equal(t, uri, got.String())

			b, err := c.s.MarshalText()
			require.NoError(t, err)
			require.Equal(t, uri, string(b))
			var u Sturdyref
			require.NoError(t, u.UnmarshalText(b))
			require.Equal(t, c.s, u)
		})
	}
}

func TestSturdyrefURIAcceptsEquivalentForms(t *testing.T) {
	text := base64.RawURLEncoding.EncodeToString(srSwiss32)
	want := Sturdyref{Addr: bokbok.Addr{Network: "tcp", Address: "127.0.0.1:7000"}, Realm: "a b/é", Swiss: srSwiss32}
	for _, uri := range []string{
		"bokbok://127.0.0.1:7000/s/" + text + "?realm=a%20b%2F%C3%A9",
		"bokbok://127.0.0.1:7000/s/" + text + "?realm=a%20b%2f%c3%a9",     // hex digits of either case
		"BOKBOK://127.0.0.1:7000/s/" + text + "?realm=a%20b%2F%C3%A9",     // schemes ignore case
		"Bokbok://127.0.0.1:7000/s/" + text + "?realm=%61%20%62%2F%C3%A9", // unreserved characters encoded
	} {
		got, err := ParseSturdyref(uri)
		require.NoError(t, err, uri)
		require.Equal(t, want, got, uri)
	}
	// In the socket path, sub-delims, ':' and '@' may stand for
	// themselves, and an encoded '/' is part of the path, never a
	// separator.
	unix := func(path string) Sturdyref {
		return Sturdyref{Addr: bokbok.Addr{Network: "unix", Address: path}, Swiss: srSwiss32}
	}
	for uri, want := range map[string]Sturdyref{
		"bokbok+unix:///run/a+b:c@d,e.sock/s/" + text:                 unix("/run/a+b:c@d,e.sock"),
		"bokbok+unix:///run/a%2Bb%3Ac%40d%2ce.sock/s/" + text:         unix("/run/a+b:c@d,e.sock"),
		"BOKBOK+UNIX:///run/x.sock/s/" + text:                         unix("/run/x.sock"),
		"bokbok+unix:///tmp%2Fs%2F" + text + "/s/" + text:             unix("/tmp/s/" + text),
		"bokbok+unix:///tmp/%73/x/s/" + text:                          unix("/tmp/s/x"),
		"bokbok+unix:///a%20b/s/" + text + "?realm=%2B":               {Addr: bokbok.Addr{Network: "unix", Address: "/a b"}, Realm: "+", Swiss: srSwiss32},
		"bokbok+unix:///tmp/s/x/s/" + text + "?realm=x%2Fs%2F" + text: {Addr: bokbok.Addr{Network: "unix", Address: "/tmp/s/x"}, Realm: "x/s/" + text, Swiss: srSwiss32},
	} {
		got, err := ParseSturdyref(uri)
		require.NoError(t, err, uri)
		require.Equal(t, want, got, uri)
	}
}

// srEveryByte returns the bytes from first to last, in order.
func srEveryByte(first, last byte) string {
	var b []byte
	for c := int(first); c <= int(last); c++ {
		b = append(b, byte(c))
	}
	return string(b)
}

func TestSturdyrefURIRejects(t *testing.T) {
	good := base64.RawURLEncoding.EncodeToString(srSwiss32)
	short := base64.RawURLEncoding.EncodeToString(srSwiss(minSwissSize-1, 3))
	cases := []struct {
		name, uri, why string
	}{
		{"empty", "", `the scheme is "", want bokbok or bokbok+unix`},
		{"no scheme", "127.0.0.1:7000/s/" + good, "bad sturdyref"},
		{"wrong scheme", "http://127.0.0.1:7000/s/" + good, `the scheme is "http", want bokbok or bokbok+unix`},
		{"tcp scheme", "tcp://127.0.0.1:7000/s/" + good, `the scheme is "tcp"`},
		{"unix scheme", "unix:///run/app.sock/s/" + good, `the scheme is "unix"`},
		{"missing host", "bokbok:///s/" + good, "no host:port after bokbok://"},
		{"missing host and path", "bokbok://", "no host:port after bokbok://"},
		{"missing port", "bokbok://127.0.0.1/s/" + good, `host "127.0.0.1" is not host:port`},
		{"bad port", "bokbok://127.0.0.1:99999/s/" + good, `host "127.0.0.1:99999" is not host:port`},
		{"no //", "bokbok:127.0.0.1:7000/s/" + good, "no //"},
		{"relative unix path", "bokbok+unix://run/app.sock/s/" + good, "takes an absolute socket path"},
		{"dot unix path", "bokbok+unix://./app.sock/s/" + good, "takes an absolute socket path"},
		{"opaque unix path", "bokbok+unix:run/app.sock/s/" + good, "no //"},
		{"unix without path", "bokbok+unix:///s/" + good, "no absolute socket path before /s/"},
		{"unix root path", "bokbok+unix:////s/" + good, "no absolute socket path before /s/"},
		{"missing /s/", "bokbok://127.0.0.1:7000/" + good, "no /s/SWISS at the end"},
		{"missing path", "bokbok://127.0.0.1:7000", "no /s/SWISS at the end"},
		{"missing /s/ unix", "bokbok+unix:///run/app.sock/" + good, "no /s/SWISS at the end"},
		{"bad base64", "bokbok://127.0.0.1:7000/s/not*base64!", "not unpadded base64url"},
		{"padded base64", "bokbok://127.0.0.1:7000/s/" + base64.URLEncoding.EncodeToString(srSwiss(17, 4)), "not unpadded base64url"},
		{"std base64", "bokbok://127.0.0.1:7000/s/" + base64.RawStdEncoding.EncodeToString(srSwiss32), "not unpadded base64url"},
		{"slash after swiss", "bokbok://127.0.0.1:7000/s/" + good + "/", "not unpadded base64url"},
		{"empty swiss", "bokbok://127.0.0.1:7000/s/", "has 0 bytes, want at least 16"},
		{"short swiss", "bokbok://127.0.0.1:7000/s/" + short, "has 15 bytes, want at least 16"},
		{"unknown query parameter", "bokbok://127.0.0.1:7000/s/" + good + "?realm=a&x=1", `unknown or repeated query parameter "x"`},
		{"only unknown parameter", "bokbok://127.0.0.1:7000/s/" + good + "?Realm=a", `unknown or repeated query parameter "Realm"`},
		{"repeated realm", "bokbok://127.0.0.1:7000/s/" + good + "?realm=a&realm=b", `unknown or repeated query parameter "realm"`},
		{"bad query escape", "bokbok://127.0.0.1:7000/s/" + good + "?realm=%zz", "query"},
		{"semicolon in query", "bokbok://127.0.0.1:7000/s/" + good + "?realm=a;x=1", "query"},
		{"realm too long", "bokbok://127.0.0.1:7000/s/" + good + "?realm=" + strings.Repeat("r", 256), "the realm has 256 bytes, want at most 255"},
		{"user info", "bokbok://alice@127.0.0.1:7000/s/" + good, "user, fragment"},
		{"user and password", "bokbok://alice:secret@127.0.0.1:7000/s/" + good, "user, fragment"},
		{"fragment", "bokbok://127.0.0.1:7000/s/" + good + "#frag", "user, fragment"},
		{"empty fragment", "bokbok://127.0.0.1:7000/s/" + good + "#", "fragment"},
		{"path before /s/ for tcp", "bokbok://127.0.0.1:7000/app/s/" + good, "a path before /s/ (only bokbok+unix has one)"},
		{"two swiss numbers for tcp", "bokbok://127.0.0.1:7000/s/" + good + "/s/" + good, "a path before /s/"},
		{"host for unix", "bokbok+unix://host/run/app.sock/s/" + good, "takes an absolute socket path"},
		{"control character", "bokbok://127.0.0.1:7000/s/" + good + "\n", "bad sturdyref"},
		// Percent-encoding is RFC 3986's, and only in the socket path and
		// the realm (PROTOCOL.md §20.1).
		{"plus in the realm", "bokbok://127.0.0.1:7000/s/" + good + "?realm=a+b", `the realm: '+' must be percent-encoded (RFC 3986 percent-encoding: a space is %20, '+' is %2B)`},
		{"space in the realm", "bokbok://127.0.0.1:7000/s/" + good + "?realm=a b", "bad sturdyref"},
		{"slash in the realm", "bokbok://127.0.0.1:7000/s/" + good + "?realm=a/b", `the realm: '/' must be percent-encoded`},
		{"colon in the realm", "bokbok://127.0.0.1:7000/s/" + good + "?realm=a:b", `the realm: ':' must be percent-encoded`},
		{"question mark in the realm", "bokbok://127.0.0.1:7000/s/" + good + "?realm=a?b", `the realm: '?' must be percent-encoded`},
		{"raw non-ASCII in the realm", "bokbok://127.0.0.1:7000/s/" + good + "?realm=é", `the realm: byte 0xc3 must be percent-encoded`},
		{"truncated escape in the realm", "bokbok://127.0.0.1:7000/s/" + good + "?realm=a%2", `bad percent-encoding "%2"`},
		{"lone percent in the realm", "bokbok://127.0.0.1:7000/s/" + good + "?realm=100%", `bad percent-encoding "%"`},
		{"empty realm", "bokbok://127.0.0.1:7000/s/" + good + "?realm=", "an empty realm"},
		{"realm without =", "bokbok://127.0.0.1:7000/s/" + good + "?realm", "an empty realm"},
		{"empty query", "bokbok://127.0.0.1:7000/s/" + good + "?", "an empty query"},
		{"encoded parameter name", "bokbok://127.0.0.1:7000/s/" + good + "?r%65alm=a", `unknown or repeated query parameter "r%65alm"`},
		{"encoded separator", "bokbok://127.0.0.1:7000/%73/" + good, "no /s/SWISS at the end"},
		{"encoded slashes around s", "bokbok://127.0.0.1:7000%2Fs%2F" + good, "bad sturdyref"},
		{"encoded swiss", "bokbok://127.0.0.1:7000/s/%" + strings.ToUpper(hex.EncodeToString([]byte(good[:1]))) + good[1:], "not unpadded base64url"},
		{"encoded character in a zone", "bokbok://[fe80::1%25eth%30]:7000/s/" + good, "percent-encoding in the host other than %25"},
		{"encoded character in a host", "bokbok://%61b:1/s/" + good, "bad sturdyref"},
		{"unix path with a character to encode", "bokbok+unix:///tmp/a|b/s/" + good, `the socket path: '|' must be percent-encoded`},
		{"unix path with raw non-ASCII", "bokbok+unix:///tmp/ü/s/" + good, "the socket path: byte 0xc3 must be percent-encoded"},
		{"unix path with a bad escape", "bokbok+unix:///tmp/%zz/s/" + good, "bad sturdyref"},
		{"unix with one slash", "bokbok+unix:/tmp/x.sock/s/" + good, "no //"},
		{"unix socket path of an encoded slash", "bokbok+unix://%2F/s/" + good, "bad sturdyref"},
		{"space in host", "bokbok://exa mple:1/s/" + good, "bad sturdyref"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := ParseSturdyref(c.uri)
			require.Error(t, err, "parsed as %+v", s)
			require.ErrorContains(t, err, "ocap: bad sturdyref")
			require.ErrorContains(t, err, c.why)
			require.Equal(t, Sturdyref{}, s)

			var u Sturdyref
			require.Error(t, u.UnmarshalText([]byte(c.uri)))
			require.Equal(t, Sturdyref{}, u, "a failed UnmarshalText leaves its receiver alone")
		})
	}
}

func TestSturdyrefJSON(t *testing.T) {
	type invite struct {
		Room  Sturdyref   `json:"room"`
		Peers []Sturdyref `json:"peers"`
		Ptr   *Sturdyref  `json:"ptr,omitempty"`
	}
	room := Sturdyref{Addr: bokbok.Addr{Network: "tcp", Address: "[::1]:7000"}, Realm: "chat room", Swiss: srSwiss32}
	peer := Sturdyref{Addr: bokbok.Addr{Network: "unix", Address: "/tmp/s/peer.sock"}, Swiss: srSwiss(SwissSize, 9)}
	in := invite{Room: room, Peers: []Sturdyref{peer, room}, Ptr: &peer}
	b, err := json.Marshal(in)
	require.NoError(t, err)

	var raw map[string]any
	require.NoError(t, json.Unmarshal(b, &raw))
	require.Equal(t, room.String(), raw["room"], "a sturdyref is a JSON string: its URI")
	require.Equal(t, []any{peer.String(), room.String()}, raw["peers"])

	var out invite
	require.NoError(t, json.Unmarshal(b, &out))
	require.Equal(t, in, out)

	// A malformed URI inside JSON fails with the parser's error.
	err = json.Unmarshal([]byte(`{"room": "bokbok://127.0.0.1:7000/s/c2hvcnQ"}`), &out)
	require.ErrorContains(t, err, "want at least 16")
	err = json.Unmarshal([]byte(`{"room": "http://127.0.0.1:7000/s/`+swissText(srSwiss32)+`"}`), &out)
	require.ErrorContains(t, err, `the scheme is "http"`)
	err = json.Unmarshal([]byte(`{"room": 7}`), &out)
	require.Error(t, err)
}

func TestSturdyIDAndKey(t *testing.T) {
	a, b := srSwiss(SwissSize, 1), srSwiss(SwissSize, 2)
	id := sturdyID(a)
	require.Len(t, id, 22, "16 bytes in unpadded base64url")
	require.Equal(t, id, sturdyID(append([]byte(nil), a...)), "derived, not random")
	require.NotEqual(t, id, sturdyID(b))
	require.True(t, sturdyKey(a).Equal(sturdyKey(append([]byte(nil), a...))))
	require.False(t, sturdyKey(a).Equal(sturdyKey(b)))
	srRequireNoSwissPart(t, sturdyUserPrefix+id, a)
}

// srRequireNoSwissPart checks that s contains no piece of the swiss number,
// in any of the usual text forms or raw.
func srRequireNoSwissPart(t *testing.T, s string, swiss []byte) {
	t.Helper()
	forms := map[string]int{ // form -> the window checked
		base64.RawURLEncoding.EncodeToString(swiss): 6,
		base64.RawStdEncoding.EncodeToString(swiss): 6,
		string(swiss): 4,
	}
	forms[hex.EncodeToString(swiss)] = 8
	for form, w := range forms {
		for i := 0; i+w <= len(form); i++ {
			require.NotContains(t, strings.ToLower(s), strings.ToLower(form[i:i+w]), "user name %q holds a piece of the swiss number", s)
		}
	}
}

func FuzzParseSturdyref(f *testing.F) {
	good := swissText(srSwiss32)
	for _, seed := range []string{
		"bokbok://127.0.0.1:7000/s/" + good,
		"bokbok://[::1]:7000/s/" + good + "?realm=a+b",
		"bokbok://[fe80::1%25eth0]:7000/s/" + good,
		"bokbok+unix:///tmp/s/app.sock/s/" + good,
		"bokbok+unix:///run/my%20app/a%3Fb%23c%25d.sock/s/" + good + "?realm=%C3%A9",
		"bokbok://h:1/s/" + swissText(srSwiss(16, 0)),
		"bokbok://h:1/%73/" + good,
		"bokbok+unix:////tmp//x/s/" + good,
		"bokbok://127.0.0.1:7000/s/" + good + "?realm=a&x=1",
		"bokbok://u@h:1/s/" + good + "#f",
		"http://h:1/s/" + good,
		"bokbok://h:1/a/s/!!",
		"bokbok://h:1/s/" + good + "?realm=a%20b%2B%2F%25%C3%A9",
		"bokbok://h:1/s/" + good + "?realm=a%2fb%c3%a9~",
		"bokbok+unix:///tmp%2Fs%2F" + good + "/s/" + good,
		"bokbok+unix:///a+b:c@d/s/" + good + "?realm=%2B",
		"bokbok://a%25b:1/s/" + good,
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		s, err := ParseSturdyref(uri)
		if err != nil {
			if s.Swiss != nil || s.Realm != "" || s.Addr != (bokbok.Addr{}) {
				t.Fatalf("ParseSturdyref(%q) failed (%v) but returned %+v", uri, err, s)
			}
			return
		}
		if len(s.Swiss) < minSwissSize || len(s.Realm) > 255 {
			t.Fatalf("ParseSturdyref(%q) accepted %+v", uri, s)
		}
		switch s.Addr.Network {
		case "tcp":
			if _, err := bokbok.ParseAddr(s.Addr.Address); err != nil {
				t.Fatalf("ParseSturdyref(%q) gave a tcp address that does not parse: %v", uri, err)
			}
		case "unix":
			if !strings.HasPrefix(s.Addr.Address, "/") {
				t.Fatalf("ParseSturdyref(%q) gave a relative socket path %q", uri, s.Addr.Address)
			}
		default:
			t.Fatalf("ParseSturdyref(%q) gave network %q", uri, s.Addr.Network)
		}
		again := s.String()
		// The canonical form: RFC 3986 percent-encoding, upper-case hex,
		// nothing encoded that need not be.
		if q, ok := strings.CutPrefix(again[strings.LastIndex(again, "/s/"):], "/s/"+swissText(s.Swiss)); !ok || (q != "" && q != "?realm="+pctEncode(s.Realm, "")) {
			t.Fatalf("ParseSturdyref(%q) = %+v, whose URI %q does not end in its canonical swiss number and realm", uri, s, again)
		}
		if _, rest, _ := strings.Cut(again, "://"); strings.ContainsAny(rest, " +") {
			t.Fatalf("URI %q has a space or '+'", again)
		}
		s2, err := ParseSturdyref(again)
		if err != nil {
			t.Fatalf("ParseSturdyref(%q) = %+v, whose URI %q does not parse: %v", uri, s, again, err)
		}
		if !srEqual(s, s2) {
			t.Fatalf("ParseSturdyref(%q) = %+v, but its URI %q parses to %+v", uri, s, again, s2)
		}
		if s2.String() != again {
			t.Fatalf("URI %q re-formats to %q", again, s2.String())
		}
	})
}

func srEqual(a, b Sturdyref) bool {
	return a.Addr == b.Addr && a.Realm == b.Realm && string(a.Swiss) == string(b.Swiss)
}
