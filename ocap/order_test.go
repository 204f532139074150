package ocap

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// burst is the number of messages of an ordering test.
const burst = 1024

// orderCase is one way of reaching a target that asserts E-order.
type orderCase struct {
	name string
	// setup builds the network and returns the reference the burst goes
	// through, a function that resolves it (nil for a plain reference),
	// the sessions whose tables must be empty afterwards, and a function
	// (or nil) that makes the actors drop the references they hold. The
	// test runs it in a function of its own, so that nothing it made stays
	// reachable when the tables are checked.
	setup func(t *testing.T, ctx context.Context) (to Ref, resolve func(), sessions []*Session, cleanup func())
}

// TestEOrderThroughResolvingPromise sends 1,024 messages, each with a
// sequence number, through one reference and requires the target to see
// them in order. For promises, the promise resolves partway through the
// burst: messages sent before travel through the answer, messages after
// keep travelling the same way, and none overtakes another.
func TestEOrderThroughResolvingPromise(t *testing.T) {
	cases := []orderCase{
		{
			// The answer comes from the peer, but the target lives in the
			// caller's own vat: every message goes to the peer's answer and
			// is sent back, also after the promise has resolved here.
			name: "promise on the peer resolves to an actor local to the caller",
			setup: func(t *testing.T, ctx context.Context) (Ref, func(), []*Session, func()) {
				va, vg := newTestVat(t, "a"), newTestVat(t, "gate")
				var a, b Node
				g := newGate(Ref{})
				open := gateOpener(t, g)
				b.Bind("gate", vg.Spawn(g))
				sa, sb := pipeNodes(t, ctx, &a, &b)
				gr := awaitRef(t, ctx, sa.Fetch("gate"))
				target := va.Spawn(&seqTarget{name: "T"})
				await(t, ctx, gr.Send("set", target))
				p := gr.Send("wait")
				return p.Ref(), open, []*Session{sa, sb}, func() { await(t, ctx, gr.Send("clear")) }
			},
		},
		{
			name: "promise on the peer resolves to an actor on the peer",
			setup: func(t *testing.T, ctx context.Context) (Ref, func(), []*Session, func()) {
				vb, vg := newTestVat(t, "b"), newTestVat(t, "gate")
				var a, b Node
				g := newGate(vb.Spawn(&seqTarget{name: "T"}))
				open := gateOpener(t, g)
				b.Bind("gate", vg.Spawn(g))
				sa, sb := pipeNodes(t, ctx, &a, &b)
				p := sa.Fetch("gate").Send("wait") // pipelined: two promises deep
				return p.Ref(), open, []*Session{sa, sb}, nil
			},
		},
		{
			// A-B and B-C are connected, A and C are not: B hands A a
			// reference to C's actor, and the messages travel A -> B -> C.
			name: "promise on the peer resolves to an actor on a third node",
			setup: func(t *testing.T, ctx context.Context) (Ref, func(), []*Session, func()) {
				vc, vg := newTestVat(t, "c"), newTestVat(t, "gate")
				var a, b, c Node
				c.Bind("target", vc.Spawn(&seqTarget{name: "T"}))
				sbc, scb := pipeNodes(t, ctx, &b, &c)
				g := newGate(awaitRef(t, ctx, sbc.Fetch("target")))
				open := gateOpener(t, g)
				gateRef := vg.Spawn(g)
				b.Bind("gate", gateRef)
				sab, sba := pipeNodes(t, ctx, &a, &b)
				p := sab.Fetch("gate").Send("wait")
				return p.Ref(), open, []*Session{sab, sba, sbc, scb}, func() {
					await(t, ctx, gateRef.Send("clear"))
					b.Unbind("gate")
				}
			},
		},
		{
			// The answer is local, the target is on the peer: messages wait
			// in the local promise, then go on to the import in order.
			name: "local promise resolves to an actor on the peer",
			setup: func(t *testing.T, ctx context.Context) (Ref, func(), []*Session, func()) {
				vb, vg := newTestVat(t, "b"), newTestVat(t, "gate")
				var a, b Node
				b.Bind("target", vb.Spawn(&seqTarget{name: "T"}))
				sa, sb := pipeNodes(t, ctx, &a, &b)
				g := newGate(awaitRef(t, ctx, sa.Fetch("target")))
				open := gateOpener(t, g)
				gateRef := vg.Spawn(g)
				p := gateRef.Send("wait")
				return p.Ref(), open, []*Session{sa, sb}, func() { await(t, ctx, gateRef.Send("clear")) }
			},
		},
		{
			name: "plain reference to an actor on the peer",
			setup: func(t *testing.T, ctx context.Context) (Ref, func(), []*Session, func()) {
				vb := newTestVat(t, "b")
				var a, b Node
				b.Bind("target", vb.Spawn(&seqTarget{name: "T"}))
				sa, sb := pipeNodes(t, ctx, &a, &b)
				return awaitRef(t, ctx, sa.Fetch("target")), nil, []*Session{sa, sb}, nil
			},
		},
		{
			name: "plain reference to a local actor",
			setup: func(t *testing.T, ctx context.Context) (Ref, func(), []*Session, func()) {
				v := newTestVat(t, "local")
				return v.Spawn(&seqTarget{name: "T"}), nil, nil, nil
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			var sessions []*Session
			func() {
				to, resolve, ss, cleanup := tc.setup(t, ctx)
				sessions = ss
				rep := sendBurst(t, ctx, to, resolve)
				require.Empty(t, rep.Bad)
				require.Equal(t, burst, rep.Next)
				if cleanup != nil {
					cleanup()
				}
			}()
			requireDrained(t, sessions...)
		})
	}
}

// sendBurst sends the burst through to from this goroutine, alternating
// Send and SendOnly. If resolve is not nil, to is a promise: resolve is
// called a quarter of the way through, and the burst requires the promise
// to settle here before three quarters have been sent, so that messages go
// out both before and after it resolved. It returns the target's report,
// asked through the same reference after the burst.
func sendBurst(t *testing.T, ctx context.Context, to Ref, resolve func()) seqReport {
	t.Helper()
	p, _ := to.t.(*Promise)
	require.Equal(t, resolve != nil, p != nil, "a promise needs a resolve function")
	settledAt := -1
	var answers []*Promise
	for i := 0; i < burst; i++ {
		if resolve != nil {
			if i == burst/4 {
				require.False(t, p.Settled(), "the promise resolved before the burst")
				resolve()
			}
			if i == 3*burst/4 && settledAt < 0 {
				await(t, ctx, p) // let it resolve here, then send the rest
			}
			if settledAt < 0 && p.Settled() {
				settledAt = i
			}
		}
		if i%2 == 0 {
			answers = append(answers, to.Send("hit", "T", i))
		} else {
			require.NoError(t, to.SendOnly("hit", "T", i))
		}
	}
	if resolve != nil {
		require.GreaterOrEqual(t, settledAt, burst/4, "the promise resolved partway through the burst")
		t.Logf("the promise resolved before message %d of %d", settledAt, burst)
	}
	for i, a := range answers {
		require.Equal(t, 2*i, awaitValue[int](t, ctx, a), "answer %d", i)
	}
	return awaitValue[seqReport](t, ctx, to.Send("report"))
}

// TestEOrderPerReference: E-order is per reference. Four references to
// four actors (two imports, a promise resolving meanwhile, a local actor),
// used in turn from one goroutine, each deliver in order, and each message
// reaches the actor it names.
func TestEOrderPerReference(t *testing.T) {
	ctx := testCtx(t)
	var sessions []*Session
	func() {
		va, vb := newTestVat(t, "a"), newTestVat(t, "b")
		var a, b Node
		for i := 0; i < 3; i++ {
			b.Bind(fmt.Sprint("t", i), vb.Spawn(&seqTarget{name: fmt.Sprint("T", i)}))
		}
		sa, sb := pipeNodes(t, ctx, &a, &b)
		sessions = []*Session{sa, sb}
		refs := []Ref{
			awaitRef(t, ctx, sa.Fetch("t0")),
			awaitRef(t, ctx, sa.Fetch("t1")),
			sa.Fetch("t2").Ref(), // a promise, resolving meanwhile
			va.Spawn(&seqTarget{name: "T3"}),
		}
		for i := 0; i < burst; i++ {
			k := i % len(refs)
			require.NoError(t, refs[k].SendOnly("hit", fmt.Sprint("T", k), i/len(refs)))
		}
		for k, r := range refs {
			rep := awaitValue[seqReport](t, ctx, r.Send("report"))
			require.Empty(t, rep.Bad, "target %d", k)
			require.Equal(t, burst/len(refs), rep.Next, "target %d", k)
		}
	}()
	requireDrained(t, sessions...)
}
