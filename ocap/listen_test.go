package ocap

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bokbok-go/bokbok"
	"github.com/stretchr/testify/require"
)

// TestNodeListen: Listen sets an empty Node.Addr from the listener (the
// port it got, a socket's absolute path) and keeps one already set.
func TestNodeListen(t *testing.T) {
	vat := newTestVat(t, "v")
	r := vat.Spawn(&srEcho{"x"})

	// TCP on a free port: the sturdyref names the port the listener got.
	n := &Node{}
	ln, err := n.Listen("127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	require.Equal(t, "tcp://"+ln.Addr().String(), n.Addr)
	require.False(t, strings.HasSuffix(n.Addr, ":0"))
	sr, err := n.Register(r)
	require.NoError(t, err)
	require.Equal(t, bokbok.Addr{Network: "tcp", Address: ln.Addr().String()}, sr.Addr)

	// A Unix socket by a relative path: its absolute path.
	dir, err := os.MkdirTemp("", "ocap")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	dir, err = filepath.EvalSymlinks(dir)
	require.NoError(t, err)
	t.Chdir(dir)
	u := &Node{}
	uln, err := u.Listen("./node.sock")
	require.NoError(t, err)
	defer uln.Close()
	require.Equal(t, "unix://"+filepath.Join(dir, "node.sock"), u.Addr)
	sr, err = u.Register(r)
	require.NoError(t, err)
	require.Equal(t, bokbok.Addr{Network: "unix", Address: filepath.Join(dir, "node.sock")}, sr.Addr)
	back, err := ParseSturdyref(sr.String())
	require.NoError(t, err)
	require.Equal(t, sr, back)

	// A public address already set is kept.
	pub := &Node{Addr: "chat.example:7001"}
	pln, err := pub.Listen("127.0.0.1:0")
	require.NoError(t, err)
	defer pln.Close()
	require.Equal(t, "chat.example:7001", pub.Addr)

	// Failures leave Addr alone.
	bad := &Node{}
	_, err = bad.Listen("sock")
	require.ErrorContains(t, err, "ambiguous")
	_, err = bad.Listen(ln.Addr().String()) // in use
	require.Error(t, err)
	var opErr *net.OpError
	require.ErrorAs(t, err, &opErr)
	require.Empty(t, bad.Addr)
}

// TestFailedRegisterGivesNoURI: a Register that fails returns the zero
// Sturdyref, which prints as "" (not bokbok:///s/) and does not marshal;
// a failed RegisterAs adds no label to the store.
func TestFailedRegisterGivesNoURI(t *testing.T) {
	vat := newTestVat(t, "v")
	r := vat.Spawn(&srEcho{"x"})
	st, err := OpenStore(filepath.Join(t.TempDir(), "store.json"))
	require.NoError(t, err)

	n := &Node{Store: st}
	sr, err := n.Register(r)
	require.ErrorContains(t, err, "Node.Addr is empty")
	require.ErrorContains(t, err, "Node.Listen")
	require.True(t, sr.IsZero())
	require.Equal(t, "", sr.String())
	sr, err = n.RegisterAs("room", r)
	require.ErrorContains(t, err, "Node.Addr is empty")
	require.True(t, sr.IsZero())
	require.Empty(t, st.Labels(), "a failed RegisterAs keeps no swiss number")
	_, err = (&Node{Store: st, Addr: "127.0.0.1:7000"}).RegisterAs("room", Ref{})
	require.ErrorContains(t, err, "zero Ref")
	require.Empty(t, st.Labels())

	_, err = sr.MarshalText()
	require.ErrorIs(t, err, ErrZeroSturdyref)
	_, err = json.Marshal(struct{ Room Sturdyref }{sr})
	require.ErrorIs(t, err, ErrZeroSturdyref)
	// An optional sturdyref: a pointer, left out when nil.
	b, err := json.Marshal(struct {
		Room *Sturdyref `json:",omitempty"`
	}{})
	require.NoError(t, err)
	require.Equal(t, "{}", string(b))
	var back Sturdyref
	require.Error(t, back.UnmarshalText([]byte("")), "\"\" is no sturdyref")

	// Not zero: a sturdyref with any field set prints and marshals.
	good, err := (&Node{Addr: "127.0.0.1:7000"}).Register(r)
	require.NoError(t, err)
	require.False(t, good.IsZero())
	text, err := good.MarshalText()
	require.NoError(t, err)
	require.Equal(t, good.String(), string(text))
	require.NoError(t, back.UnmarshalText(text))
	require.Equal(t, good, back)
}
