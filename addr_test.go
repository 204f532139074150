package bokbok

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAddrParseAccepts(t *testing.T) {
	cases := []struct {
		in   string
		want Addr
	}{
		{"localhost:7000", Addr{"tcp", "localhost:7000"}},
		{"127.0.0.1:0", Addr{"tcp", "127.0.0.1:0"}},
		{"[::1]:7000", Addr{"tcp", "[::1]:7000"}},
		{"[fe80::1%eth0]:7000", Addr{"tcp", "[fe80::1%eth0]:7000"}},
		{":7000", Addr{"tcp", ":7000"}},
		{"localhost:65535", Addr{"tcp", "localhost:65535"}},
		{"example.com:0", Addr{"tcp", "example.com:0"}},
		{"tcp://localhost:7000", Addr{"tcp", "localhost:7000"}},
		{"tcp://[::1]:7000", Addr{"tcp", "[::1]:7000"}},
		{"tcp://:7000", Addr{"tcp", ":7000"}},
		{"./bokbok.sock", Addr{"unix", "./bokbok.sock"}},
		{"../run/bokbok.sock", Addr{"unix", "../run/bokbok.sock"}},
		{"dir/bokbok.sock", Addr{"unix", "dir/bokbok.sock"}},
		{"/run/app.sock", Addr{"unix", "/run/app.sock"}},
		{"/tmp/with:colon.sock", Addr{"unix", "/tmp/with:colon.sock"}},
		{"unix:///run/app.sock", Addr{"unix", "/run/app.sock"}},
		{"unix:///tmp/a b.sock", Addr{"unix", "/tmp/a b.sock"}},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseAddr(tc.in)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestAddrParseRejects(t *testing.T) {
	cases := []struct {
		in   string
		why  string // the explanation after `bokbok: bad address "in": `
		hint []string
	}{
		{"", "empty", nil},
		{"sock", "ambiguous", []string{`"./sock"`, `"sock:PORT"`, "Unix socket", "TCP"}},
		{"localhost", "ambiguous", []string{`"./localhost"`, `"localhost:PORT"`}},
		{"localhost:", "port", []string{`port ""`, "0 to 65535"}},
		{"localhost:http", "port", []string{`port "http" is not a number from 0 to 65535`}},
		{"localhost:65536", "port", []string{`port "65536"`}},
		{"localhost:-1", "port", []string{`port "-1"`}},
		{"localhost:+80", "port", []string{`port "+80"`}},
		{"localhost:8080:1", "want host:port", []string{"too many colons"}},
		{"::1", "want host:port", []string{"too many colons"}},
		{"[::1]", "want host:port", []string{"missing port"}},
		{"[::1:80", "want host:port", []string{"missing ']'"}},
		{"http://localhost:80", "unknown scheme", []string{`"http"`, "tcp://", "unix://"}},
		{"udp://localhost:80", "unknown scheme", []string{`"udp"`}},
		{"TCP://localhost:80", "unknown scheme", []string{`"TCP"`}},
		{"://localhost:80", "unknown scheme", []string{`""`}},
		{"./dir://x", "unknown scheme", []string{`"./dir"`}},
		{"unix://relative.sock", "absolute path", []string{`"unix:///run/app.sock"`, `"./app.sock"`}},
		{"unix://./relative.sock", "absolute path", nil},
		{"unix://", "absolute path", nil},
		{"tcp://localhost:80/path", "no path", []string{"host:port"}},
		{"tcp://localhost:80?x=1", "no path", nil},
		{"tcp://localhost:80#frag", "no path", nil},
		{"tcp:///run/app.sock", "no path", nil},
		{"tcp://localhost", "want host:port", []string{"missing port"}},
		{"tcp://", "want host:port", nil},
		{"tcp://localhost:port", "port", []string{`port "port"`}},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseAddr(tc.in)
			require.Error(t, err, "parsed as %#v", got)
			assert.Equal(t, Addr{}, got)
			msg := err.Error()
			prefix := "bokbok: bad address " + strconv.Quote(tc.in) + ": "
			require.True(t, strings.HasPrefix(msg, prefix), "error %q should start with %q", msg, prefix)
			assert.Contains(t, strings.TrimPrefix(msg, prefix), tc.why)
			for _, h := range tc.hint {
				assert.Contains(t, msg, h)
			}

			// Listen and Dial reject it the same way, without touching the
			// network.
			_, lerr := Listen(tc.in)
			assert.EqualError(t, lerr, msg)
			_, derr := Dial(context.Background(), tc.in, nil)
			assert.EqualError(t, derr, msg)
		})
	}
}

func TestAddrString(t *testing.T) {
	cases := []struct {
		a    Addr
		want string
	}{
		{Addr{"tcp", "localhost:7000"}, "tcp://localhost:7000"},
		{Addr{"tcp", "[::1]:7000"}, "tcp://[::1]:7000"},
		{Addr{"tcp", ":0"}, "tcp://:0"},
		{Addr{"unix", "/run/app.sock"}, "unix:///run/app.sock"},
		{Addr{"unix", "./app.sock"}, "./app.sock"},
		{Addr{"unix", "dir/app.sock"}, "dir/app.sock"},
		{Addr{"unix", "app.sock"}, "./app.sock"}, // a bare name gains "./"
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.a.String())
			back, err := ParseAddr(tc.a.String())
			require.NoError(t, err)
			assert.Equal(t, tc.a.Network, back.Network)
			if tc.a.Address != "app.sock" {
				assert.Equal(t, tc.a, back)
			}
		})
	}
}

// TestAddrStringRoundTrip: String promises that ParseAddr reads its result
// back unchanged, for every address ParseAddr accepts.
func TestAddrStringRoundTrip(t *testing.T) {
	for _, in := range []string{
		"localhost:7000", "[::1]:7000", ":7000", "tcp://127.0.0.1:1",
		"./a.sock", "a/b.sock", "/abs/a.sock", "unix:///abs/a.sock", "unix:///a://b",
		"host-1.example_net:80", "[fe80::1%eth0]:80",
	} {
		a, err := ParseAddr(in)
		require.NoError(t, err, in)
		back, err := ParseAddr(a.String())
		if assert.NoError(t, err, "ParseAddr(%q).String() = %q does not parse", in, a.String()) {
			assert.Equal(t, a, back, "round trip of %q through %q", in, a.String())
		}
	}
}

// TestAddrListenAndDialForms serves on addresses of each form and dials
// them back in other forms of the same address.
func TestAddrListenAndDialForms(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "b.sock")
	cases := []struct {
		listen string
		dial   func(listened string) []string
	}{
		{"127.0.0.1:0", func(a string) []string { return []string{a, "tcp://" + a} }},
		{"tcp://127.0.0.1:0", func(a string) []string { return []string{a} }},
		{sock, func(a string) []string { return []string{a, "unix://" + a} }},
	}
	ctx := testCtx(t)
	for _, tc := range cases {
		t.Run(tc.listen, func(t *testing.T) {
			ln, err := Listen(tc.listen)
			require.NoError(t, err)
			srv := &Server{Config: Config{Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
				return "hi", nil
			})}}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ln) }()
			defer func() {
				srv.Close()
				srv.Wait()
				assert.ErrorIs(t, <-served, ErrServerClosed)
			}()
			for _, addr := range tc.dial(ln.Addr().String()) {
				c, err := Dial(ctx, addr, nil)
				require.NoError(t, err, addr)
				var got string
				require.NoError(t, c.Call(ctx, nil, &got), addr)
				assert.Equal(t, "hi", got)
				c.Close()
			}
		})
	}
}
