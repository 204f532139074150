package ocap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/stretchr/testify/require"
)

// outcome counts how a promise settled, as seen by callbacks registered
// with Vat.On.
type outcome struct {
	name      string
	fulfilled atomic.Int32
	broken    atomic.Int32
	mu        sync.Mutex
	err       error
}

func track(v *Vat, name string, p *Promise) *outcome {
	o := &outcome{name: name}
	v.On(p, func(Result) { o.fulfilled.Add(1) }, func(err error) {
		o.mu.Lock()
		o.err = err
		o.mu.Unlock()
		o.broken.Add(1)
	})
	return o
}

func (o *outcome) Err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// requireBrokenOnce requires every promise to have broken exactly once, with
// an error matching ErrDisconnected, and never to have been fulfilled.
func requireBrokenOnce(t *testing.T, os []*outcome) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, o := range os {
			if o.broken.Load() == 0 {
				return false
			}
		}
		return true
	}, 5*time.Second, time.Millisecond, "every pending promise breaks")
	for _, o := range os {
		require.EqualValues(t, 1, o.broken.Load(), "%s broke once", o.name)
		require.EqualValues(t, 0, o.fulfilled.Load(), "%s was never fulfilled", o.name)
		require.ErrorIs(t, o.Err(), ErrDisconnected, "%s", o.name)
	}
}

// caller, on B, calls back a reference A sent it and remembers how that
// went.
type caller struct {
	r    Ref
	lost bool
}

func (c *caller) Call(ctx context.Context, r Ref) (*Promise, error) {
	c.r = r
	p := r.Send("block", "from-b")
	err := On(ctx, p, nil, func(err error) { c.lost = errors.Is(err, ErrDisconnected) })
	return p, err
}

func (c *caller) Lost() bool { return c.lost }

// Again sends through the import again; it answers the promise.
func (c *caller) Again() *Promise { return c.r.Send("ping") }

// relay, on A, forwards a message to the peer and chains its answer: a
// local promise that depends on a remote one.
type relay struct{}

func (relay) Relay(r Ref, tag string) *Promise { return r.Send("block", tag) }

// TestDisconnectBreaksEverythingOnce closes the connection, in each of the
// ways it can close, while every kind of state is in flight at once:
//
//   - imports on both sides (A's of B's actors, B's of A's callback);
//   - a question whose actor is in the middle of its turn (B's slow actor;
//     and the other way, A's callback, called by B, in the middle of its);
//   - 200 questions queued behind the slow actor;
//   - messages pipelined to unresolved answers, two deep;
//   - a local promise chained to a remote one.
//
// Every pending promise breaks exactly once with an error matching
// ErrDisconnected; later sends through imports and promises fail at once;
// the tables of both sessions are empty; the actors' late answers go
// nowhere and their vats keep working.
func TestDisconnectBreaksEverythingOnce(t *testing.T) {
	closers := []struct {
		name  string
		close func(sa, sb *Session, ca, cb net.Conn)
	}{
		{"client closes its session", func(sa, sb *Session, ca, cb net.Conn) { sa.Close() }},
		{"server closes its session", func(sa, sb *Session, ca, cb net.Conn) { sb.Close() }},
		{"client's net.Conn closes", func(sa, sb *Session, ca, cb net.Conn) { ca.Close() }},
		{"server's net.Conn closes", func(sa, sb *Session, ca, cb net.Conn) { cb.Close() }},
	}
	for _, tc := range closers {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			va, vaSlow := newTestVat(t, "a"), newTestVat(t, "a-slow")
			vb, vbSlow := newTestVat(t, "b"), newTestVat(t, "b-slow")
			var a, b Node
			echoRef := vb.Spawn(echo{})
			slow := newBlocker(echoRef)
			releaseSlow := releaser(t, slow)
			slowRef := vbSlow.Spawn(slow)
			callerRef := vb.Spawn(&caller{})
			b.Bind("echo", echoRef)
			b.Bind("slow", slowRef)
			b.Bind("caller", callerRef)
			cbBlocker := newBlocker(Ref{})
			releaseCb := releaser(t, cbBlocker)
			cb := vaSlow.Spawn(cbBlocker)
			ca, cbConn := net.Pipe()
			sa, sb := connectConns(t, ctx, &a, &b, ca, cbConn)

			// Imports.
			e := awaitRef(t, ctx, sa.Fetch("echo"))
			require.Equal(t, "pong", awaitValue[string](t, ctx, e.Send("ping")))
			slowImp := awaitRef(t, ctx, sa.Fetch("slow"))
			callerImp := awaitRef(t, ctx, sa.Fetch("caller"))

			var pending []*outcome
			// B's slow actor in the middle of a turn.
			pending = append(pending, track(va, "mid-turn", slowImp.Send("block", "mid-turn")))
			require.Equal(t, "mid-turn", <-slow.entered)
			// Questions queued behind it.
			for i := 0; i < 200; i++ {
				pending = append(pending, track(va, fmt.Sprint("queued ", i), slowImp.Send("block", fmt.Sprint(i))))
			}
			// Pipelined two deep to answers that do not exist yet.
			pRef := slowImp.Send("block-ref")
			q1 := pRef.Send("echo-ref", e) // answers B's echo, sent back as B's own
			q2 := q1.Send("ping")
			pending = append(pending, track(va, "block-ref", pRef), track(va, "pipelined", q1), track(va, "pipelined twice", q2))
			// A local promise chained to a remote one.
			pending = append(pending, track(va, "chained", va.Spawn(relay{}).Send("relay", slowImp, "relayed")))
			// B calls A back, and A's actor is in the middle of its turn.
			pending = append(pending, track(va, "callback", callerImp.Send("call", cb)))
			require.Equal(t, "from-b", <-cbBlocker.entered)

			time.Sleep(10 * time.Millisecond) // let everything reach the wire
			for _, o := range pending {
				require.Zero(t, o.broken.Load()+o.fulfilled.Load(), "%s settled before the disconnect", o.name)
			}
			st := sa.Stats()
			require.Equal(t, 3, st.Imports)
			require.GreaterOrEqual(t, st.Questions, 205)
			require.Equal(t, 1, sb.Stats().Imports, "B imports A's callback")

			tc.close(sa, sb, ca, cbConn)
			<-sa.Done()
			<-sb.Done()
			requireBrokenOnce(t, pending)
			require.Eventually(t, func() bool { return awaitValue[bool](t, ctx, callerRef.Send("lost")) },
				5*time.Second, time.Millisecond, "B's question to A broke with ErrDisconnected too")

			// Later sends fail at once, through imports and promises, on
			// both sides.
			for name, r := range map[string]Ref{
				"import": e, "import of a busy actor": slowImp, "promise": q1.Ref(), "bootstrap": sa.Bootstrap(),
			} {
				p := r.Send("ping")
				require.True(t, p.Settled(), "a send through a %s after the disconnect fails at once", name)
				_, err := p.Await(ctx)
				require.ErrorIs(t, err, ErrDisconnected, name)
			}
			_, err := sa.Fetch("echo").Await(ctx)
			require.ErrorIs(t, err, ErrDisconnected)
			_, err = callerRef.Send("again").Await(ctx)
			require.ErrorIs(t, err, ErrDisconnected, "B's import of A's callback fails too")

			require.Eventually(t, func() bool {
				return sa.Stats() == (Stats{}) && sb.Stats() == (Stats{})
			}, 5*time.Second, time.Millisecond, "tables empty: %+v %+v", sa.Stats(), sb.Stats())
			require.Empty(t, a.Sessions())
			require.Empty(t, b.Sessions())

			// The actors finish their turns; their answers go nowhere, and
			// no promise settles a second time.
			releaseSlow()
			releaseCb()
			require.Equal(t, "pong", awaitValue[string](t, ctx, slowRef.Send("ping")), "B's slow vat goes on")
			require.Equal(t, "pong", awaitValue[string](t, ctx, cb.Send("ping")), "A's slow vat goes on")
			require.NoError(t, vb.Do(ctx, func(context.Context) {}))
			requireBrokenOnce(t, pending)
			runtime.KeepAlive(callerImp) // an import counts while it is reachable
		})
	}
}

// TestDisconnectIdle: a connection with nothing in flight but imports ends
// the same way: sends through the imports fail at once.
func TestDisconnectIdle(t *testing.T) {
	ctx := testCtx(t)
	vb := newTestVat(t, "b")
	var a, b Node
	b.Bind("echo", vb.Spawn(echo{}))
	sa, sb := pipeNodes(t, ctx, &a, &b)
	e := awaitRef(t, ctx, sa.Fetch("echo"))
	require.NoError(t, sb.Close())
	<-sa.Done()
	require.ErrorIs(t, sa.Err(), bokbok.ErrClosed, "Err says why the session ended")
	p := e.Send("ping")
	require.True(t, p.Settled())
	_, err := p.Await(ctx)
	require.ErrorIs(t, err, ErrDisconnected)
	require.NoError(t, e.SendOnly("ping"), "SendOnly reports nothing it cannot see at once")
	e.Release() // does nothing harmful after the end
	require.Equal(t, Stats{}, sa.Stats())
}
