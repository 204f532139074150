package ocap

import (
	"net"
	"testing"

	"github.com/bokbok-go/bokbok"
	"github.com/stretchr/testify/require"
)

// TestNodeUserKeys: a node served with UserKeys accepts enlivening
// connections for its sturdyrefs, and the server's own users with either
// of their two keys, and refuses the rest.
func TestNodeUserKeys(t *testing.T) {
	ctx := testCtx(t)
	vat := NewVat("bob")
	defer vat.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	oldKey, newKey, otherKey := bokbok.Key{1}, bokbok.Key{2}, bokbok.Key{3}
	bob := &Node{Addr: ln.Addr().String()}
	defer bob.Close()
	srv := &bokbok.Server{Config: bokbok.Config{Handler: bob}, UserKeys: bob.UserKeys(func(user string) []bokbok.Key {
		if user == "alice" {
			return []bokbok.Key{oldKey, newKey}
		}
		return nil
	})}
	go srv.Serve(ln)
	defer srv.Wait()
	defer srv.Close()
	sr, err := bob.Register(vat.Spawn(&greeter{"Bob"}))
	require.NoError(t, err)

	carol := &Node{}
	defer carol.Close()
	g, err := carol.Enliven(ctx, sr)
	require.NoError(t, err)
	_, err = g.Send("greet", "Carol").Await(ctx)
	require.NoError(t, err)

	for _, tc := range []struct {
		user string
		key  bokbok.Key
		ok   bool
	}{
		{"alice", oldKey, true}, {"alice", newKey, true}, {"alice", otherKey, false},
		{"mallory", oldKey, false}, {"sturdy:nothing", oldKey, false},
	} {
		c, err := bokbok.Dial(ctx, bob.Addr, &bokbok.Config{User: tc.user, Key: &tc.key})
		if tc.ok {
			require.NoError(t, err, tc.user)
			c.Close()
		} else {
			require.ErrorIs(t, err, bokbok.ErrAuth, tc.user)
		}
	}
}
