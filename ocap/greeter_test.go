package ocap

import (
	"net"
	"testing"

	"github.com/bokbok-go/bokbok"
	"github.com/stretchr/testify/require"
)

type greeter struct{ name string }

func (g *greeter) Greet(who string) string { return "Hello " + who + ", my name is " + g.name + "!" }

func TestSturdyrefGreeterRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	vat := NewVat("bob")
	defer vat.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	bob := &Node{Addr: ln.Addr().String()}
	srv := &bokbok.Server{Config: bokbok.Config{Handler: bob}, UserKey: bob.UserKey(nil)}
	go srv.Serve(ln)
	defer srv.Close()
	defer bob.Close()
	sr, err := bob.Register(vat.Spawn(&greeter{"Bob"}))
	require.NoError(t, err)
	parsed, err := ParseSturdyref(sr.String())
	require.NoError(t, err)
	t.Log(sr.String())

	alice := &Node{}
	defer alice.Close()
	g, err := alice.Enliven(ctx, parsed)
	require.NoError(t, err)
	r, err := g.Send("greet", "Alice").Await(ctx)
	require.NoError(t, err)
	var s string
	require.NoError(t, r.Decode(&s))
	require.Equal(t, "Hello Alice, my name is Bob!", s)

	// Reused connection, unknown swiss.
	bad := parsed
	bad.Swiss = append([]byte(nil), parsed.Swiss...)
	bad.Swiss[0] ^= 1
	_, err = alice.Enliven(ctx, bad)
	require.ErrorIs(t, err, ErrUnknownSturdyref)
	// New node: unknown on a fresh connection.
	carol := &Node{}
	defer carol.Close()
	_, err = carol.Enliven(ctx, bad)
	require.ErrorIs(t, err, ErrUnknownSturdyref)
	require.ErrorIs(t, err, bokbok.ErrAuth)

	// Reconnect.
	for _, s := range alice.Sessions() {
		s.Close()
	}
	g2, err := alice.Enliven(ctx, parsed)
	require.NoError(t, err)
	_, err = g2.Send("greet", "Alice").Await(ctx)
	require.NoError(t, err)

	require.NoError(t, bob.Unregister(parsed))
	_, err = alice.Enliven(ctx, parsed)
	require.ErrorIs(t, err, ErrUnknownSturdyref)
}
