package ocapbridge

import (
	"context"
	"fmt"
	"math"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bokbok-go/bokbok/ocap"
	"github.com/bokbok-go/bokbok/ocapn"
	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type counter struct{ n int }

func (c *counter) Add(k int) int { c.n += k; return c.n }

type factory struct{}

func (factory) MakeCar(ctx context.Context, model, color string) (ocap.Ref, error) {
	return ocap.Spawn(ctx, &car{model, color})
}

type car struct{ model, color string }

func (c *car) Drive() string { return fmt.Sprintf("The %s %s goes vroom!", c.color, c.model) }

// board calls back whoever subscribes.
type board struct{}

func (board) Subscribe(l ocap.Ref, news string) *ocap.Promise { return l.Send("hear", news) }

// ocapnPair is a serving OCapN node and a client node on loopback.
func ocapnPair(t *testing.T) (server, client *ocapn.Node, at ocapn.Peer) {
	t.Helper()
	nl, err := ocapn.ListenTestingOnlyTCP("127.0.0.1:0")
	require.NoError(t, err)
	server = ocapn.NewNode(ocapn.Config{})
	server.AddNetlayer(nl)
	nl2, err := ocapn.ListenTestingOnlyTCP("127.0.0.1:0")
	require.NoError(t, err)
	client = ocapn.NewNode(ocapn.Config{})
	client.AddNetlayer(nl2)
	t.Cleanup(func() { client.Close(); server.Close() })
	return server, client, nl.Location()
}

// TestOneActorOnBothProtocols: the same counter and factory actors,
// bound on an ocap node (bokbok's protocol) and registered on an OCapN
// node, are called through both; the counter counts both.
func TestOneActorOnBothProtocols(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vat := ocap.NewVat("actors")
	defer vat.Close()
	count, cars := vat.Spawn(&counter{}), vat.Spawn(factory{})

	var ocapServer, ocapClient ocap.Node
	ocapServer.Bind("counter", count)
	ocapServer.Bind("factory", cars)
	cs, ss, err := ocap.Pipe(ctx, &ocapClient, &ocapServer)
	require.NoError(t, err)
	defer ss.Close()
	defer cs.Close()

	server, client, at := ocapnPair(t)
	b := New(server, vat)
	server.Register([]byte("counter"), b.Export(count))
	server.Register([]byte("factory"), b.Export(cars))

	// OCapN adds 2, ocap adds 40: one actor.
	c, err := client.Enliven(ocapn.Sturdyref{Peer: at, Swiss: []byte("counter")}).Wait(ctx)
	require.NoError(t, err)
	v, err := client.Send(c, syrup.Symbol("add"), int64(2)).Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(2), v)
	r, err := cs.Fetch("counter").Send("add", 40).Await(ctx)
	require.NoError(t, err)
	var n int
	require.NoError(t, r.Decode(&n))
	assert.Equal(t, 42, n)

	// Pipelined over OCapN: the car the factory will make is driven
	// before it exists; it is an actor of the vat, exported on the way.
	f, err := client.Enliven(ocapn.Sturdyref{Peer: at, Swiss: []byte("factory")}).Wait(ctx)
	require.NoError(t, err)
	carP := client.Send(f, syrup.Symbol("make-car"), "Explorist", "blue")
	noise, err := client.Send(carP, syrup.Symbol("drive")).Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, "The blue Explorist goes vroom!", noise)

	// An unknown method breaks the OCapN promise with ocap's error.
	_, err = client.Send(c, syrup.Symbol("subtract"), int64(1)).Wait(ctx)
	var be *ocapn.BrokenError
	require.ErrorAs(t, err, &be)
	assert.Contains(t, be.Reason, "subtract")
}

// TestActorsCallOCapNObjects: an OCapN peer passes one of its objects to
// an ocap actor, which calls it back through the proxy the bridge made.
func TestActorsCallOCapNObjects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vat := ocap.NewVat("actors")
	defer vat.Close()
	server, client, at := ocapnPair(t)
	b := New(server, vat)
	server.Register([]byte("board"), b.Export(vat.Spawn(board{})))

	heard := make(chan []any, 1)
	listener := ocapn.ObjectFunc(func(args []any) (any, error) {
		heard <- args
		return "thanks for " + args[1].(string), nil
	})
	bd, err := client.Enliven(ocapn.Sturdyref{Peer: at, Swiss: []byte("board")}).Wait(ctx)
	require.NoError(t, err)
	v, err := client.Send(bd, syrup.Symbol("subscribe"), listener, "the news").Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, []any{syrup.Symbol("hear"), "the news"}, <-heard, "the ocap method is the leading symbol")
	assert.Equal(t, "thanks for the news", v, "the listener's answer came back through the actor")
}

func TestValueMapping(t *testing.T) {
	vat := ocap.NewVat("values")
	defer vat.Close()
	node := ocapn.NewNode(ocapn.Config{})
	defer node.Close()
	b := New(node, vat)

	toOcap := []struct {
		in, want any
	}{
		{nil, nil}, {true, true}, {int64(-7), int64(-7)}, {1.5, 1.5}, {float32(0.5), 0.5},
		{"s", "s"}, {[]byte{1}, []byte{1}}, {syrup.Symbol("sym"), "sym"},
		{[]any{int64(1), syrup.Symbol("a")}, []any{int64(1), "a"}},
		{syrup.Set{int64(1)}, []any{int64(1)}},
		{syrup.Dict{{Key: syrup.Symbol("k"), Value: "v"}, {Key: "s", Value: int64(2)}}, map[string]any{"k": "v", "s": int64(2)}},
	}
	for _, tc := range toOcap {
		got, err := b.toOcap(tc.in, 0)
		require.NoError(t, err, "%#v", tc.in)
		assert.Equal(t, tc.want, got, "%#v", tc.in)
	}
	for _, bad := range []any{
		new(big.Int).Lsh(big.NewInt(1), 70),
		syrup.Record{Label: syrup.Symbol("r"), Fields: []any{}},
		syrup.Dict{{Key: int64(1), Value: "v"}},
		syrup.Dict{{Key: syrup.Symbol("k"), Value: int64(1)}, {Key: "k", Value: int64(2)}},
		[]any{[]any{syrup.Record{Label: "deep"}}},
	} {
		_, err := b.toOcap(bad, 0)
		assert.Error(t, err, "%#v", bad)
	}

	toOCapN := []struct {
		in, want any
	}{
		{nil, nil}, {int(3), int64(3)}, {int8(-1), int64(-1)}, {uint16(9), int64(9)},
		{uint64(math.MaxUint64), new(big.Int).SetUint64(math.MaxUint64)},
		{float32(0.25), 0.25}, {"x", "x"}, {[]any{int64(1)}, []any{int64(1)}},
		{map[string]any{"a": int64(1)}, syrup.Dict{{Key: "a", Value: int64(1)}}},
	}
	for _, tc := range toOCapN {
		got, err := b.toOCapN(tc.in, 0)
		require.NoError(t, err, "%#v", tc.in)
		assert.Equal(t, tc.want, got, "%#v", tc.in)
	}
	_, err := b.toOCapN(time.Now(), 0)
	assert.Error(t, err, "a time has no OCapN form")

	// A reference goes over as an object and comes back as itself.
	ref := vat.Spawn(&counter{})
	obj, err := b.toOCapN(ref, 0)
	require.NoError(t, err)
	back, err := b.toOcap(obj, 0)
	require.NoError(t, err)
	assert.Equal(t, ref, back)

	deep := any(int64(1))
	for range syrup.MaxEncodeDepth + 2 {
		deep = []any{deep}
	}
	_, err = b.toOcap(deep, 0)
	assert.Error(t, err, "nesting is bounded")
}
