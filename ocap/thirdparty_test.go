package ocap

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/stretchr/testify/require"
)

// Three peers: C exports an object, A imports it and passes it to B, and B
// uses it. B's messages travel B -> A -> C and their answers back
// (PROTOCOL.md §19.7, forwarding).

// tpTarget is C's object. It checks that sequence numbers arrive in order.
type tpTarget struct {
	name    string
	next    int
	entered chan struct{} // closed when Hang starts (top object only)
	hang    chan struct{} // Hang returns once it is closed
}

func (o *tpTarget) Push(seq int) (int, error) {
	if seq != o.next {
		return 0, fmt.Errorf("%s: got %d, want %d", o.name, seq, o.next)
	}
	o.next++
	return seq, nil
}

func (o *tpTarget) Next() int          { return o.next }
func (o *tpTarget) Name() string       { return o.name }
func (o *tpTarget) IsLocal(r Ref) bool { return r.IsLocal() }
func (o *tpTarget) Same(a, b Ref) bool { return a == b }
func (o *tpTarget) Hang() string       { close(o.entered); <-o.hang; return "too late" }
func (o *tpTarget) MakeChild(ctx context.Context, name string) (Ref, error) {
	return Spawn(ctx, &tpTarget{name: name})
}

// tpBox carries a reference inside a message.
type tpBox struct {
	Note string
	Obj  Ref
}

// tpInbox is B's object that A hands the reference to.
type tpInbox struct{ got chan tpBox }

func (in *tpInbox) Keep(b tpBox) string { in.got <- b; return "kept: " + b.Note }

// tpBroker is A's object that hands out what A imported, as a result.
type tpBroker struct{ obj Ref }

func (b *tpBroker) Get() Ref { return b.obj }

// tpDecode awaits p and decodes its value.
func tpDecode[T any](ctx context.Context, t *testing.T, p *Promise) T {
	t.Helper()
	res, err := p.Await(ctx)
	require.NoError(t, err)
	var v T
	require.NoError(t, res.Decode(&v))
	return v
}

// tpRequireBrokenPath requires err to be what B sees when a connection
// further along the path is gone: a remote error with the code
// ocap.disconnected. It does not match ErrDisconnected, which stands for
// B's own connection: that one is fine.
func tpRequireBrokenPath(t *testing.T, err error) {
	t.Helper()
	var re *bokbok.RemoteError
	require.ErrorAs(t, err, &re, "%v", err)
	require.Equal(t, CodeDisconnected, re.Code, "%v", err)
	require.Contains(t, re.Message, ErrDisconnected.Error())
	require.NotErrorIs(t, err, ErrDisconnected)
}

// tpWaitStats runs the garbage collector until each session's tables are
// as wanted.
func tpWaitStats(t *testing.T, ss []*Session, want []Stats) {
	t.Helper()
	require.Eventually(t, func() bool {
		runtime.GC()
		for i, s := range ss {
			if s.Stats() != want[i] {
				return false
			}
		}
		return true
	}, 10*time.Second, 5*time.Millisecond, "%s", func() string {
		out := ""
		for i, s := range ss {
			out += fmt.Sprintf("\nsession %d: %+v, want %+v", i, s.Stats(), want[i])
		}
		return out
	}())
}

// tpUse sends B's messages to C's object through A: a sequence in E-order
// (Send and SendOnly mixed), a result that is a reference with messages
// pipelined to it, and references sent back to C. Everything it makes is
// dropped when it returns.
func tpUse(ctx context.Context, t *testing.T, obj Ref) {
	const n = 500
	type sent struct {
		seq int
		p   *Promise
	}
	var ps []sent
	for i := range n {
		if i%5 == 4 {
			require.NoError(t, obj.SendOnly("push", i))
			continue
		}
		ps = append(ps, sent{i, obj.Send("push", i)})
	}
	for _, s := range ps {
		require.Equal(t, s.seq, tpDecode[int](ctx, t, s.p), "answers come back to B")
	}
	require.Equal(t, n, tpDecode[int](ctx, t, obj.Send("next")), "every message arrived, in order")

	// A result that is a reference (C's new object, exported by C to A and
	// by A to B), used before it has arrived.
	childP := obj.Send("make-child", "kid")
	var cps []*Promise
	for i := range 100 {
		cps = append(cps, childP.Send("push", i))
	}
	require.Equal(t, "kid", tpDecode[string](ctx, t, childP.Send("name")))
	for i, p := range cps {
		require.Equal(t, i, tpDecode[int](ctx, t, p))
	}
	res, err := childP.Await(ctx)
	require.NoError(t, err)
	child, err := res.Ref()
	require.NoError(t, err)
	require.False(t, child.IsLocal())
	require.Equal(t, 100, tpDecode[int](ctx, t, child.Send("next")))

	// Sent back to C, through A, the references are C's own objects.
	require.True(t, tpDecode[bool](ctx, t, obj.Send("is-local", child)))
	require.True(t, tpDecode[bool](ctx, t, obj.Send("is-local", obj)))
	require.True(t, tpDecode[bool](ctx, t, obj.Send("same", obj, obj)))
	require.False(t, tpDecode[bool](ctx, t, obj.Send("same", obj, child)))
	child.Release()
	_, err = child.Send("next").Await(ctx)
	require.ErrorIs(t, err, ErrReleased)
}

// TestThirdPartyForwarding: C serves its object as a sturdyref over TCP,
// A enlivens it and passes it to B (over a Pipe) inside a message.
func TestThirdPartyForwarding(t *testing.T) {
	ctx := srCtx(t)
	vatA, vatB, vatC := NewVat("a"), NewVat("b"), NewVat("c")
	defer vatA.Close()
	defer vatB.Close()
	defer vatC.Close()
	target := &tpTarget{name: "obj", entered: make(chan struct{}), hang: make(chan struct{})}
	var unhang sync.Once
	release := func() { unhang.Do(func() { close(target.hang) }) }
	defer release()

	cNode := &Node{}
	defer cNode.Close()
	hc := srServe(t, cNode, srAddr(t, "tcp"), "", nil, nil)
	cNode.Addr = hc.addr.String()
	sr, err := cNode.Register(vatC.Spawn(target))
	require.NoError(t, err)

	aNode, bNode := &Node{}, &Node{}
	defer aNode.Close()
	defer bNode.Close()
	inbox := &tpInbox{got: make(chan tpBox, 1)}
	bNode.Bind("inbox", vatB.Spawn(inbox))
	aNode.Bind("ping", vatA.Spawn(&srEcho{"A"}))
	sAB, sBA, err := Pipe(ctx, aNode, bNode)
	require.NoError(t, err)
	defer sBA.Close()
	defer sAB.Close()

	objA, err := aNode.Enliven(ctx, sr)
	require.NoError(t, err)
	var sAC *Session
	for _, s := range aNode.Sessions() {
		if s != sAB {
			sAC = s
		}
	}
	require.NotNil(t, sAC)
	sCA := srOnlySession(t, cNode)

	// A hands the reference to B inside a message.
	require.Equal(t, "kept: from A", tpDecode[string](ctx, t, sAB.Fetch("inbox").Send("keep", tpBox{"from A", objA})))
	box := <-inbox.got
	obj := box.Obj
	require.Equal(t, "from A", box.Note)
	ir, ok := obj.t.(*importRef)
	require.True(t, ok, "B holds an import")
	require.True(t, ir.s == sBA, "imported from A: B has no connection to C")
	require.Len(t, bNode.Sessions(), 1)
	require.Len(t, cNode.Sessions(), 1)

	tpUse(ctx, t, obj)
	// All that is left is the one reference, held by B (from A) and by A
	// (from C): every question finished, every other import released.
	tpWaitStats(t, []*Session{sBA, sAB, sAC, sCA}, []Stats{{Imports: 1}, {Exports: 1}, {Imports: 1}, {Exports: 1}})

	// A's connection to C drops, with a message of B's in flight.
	func() {
		hang := obj.Send("hang")
		select {
		case <-target.entered:
		case <-ctx.Done():
			t.Fatal("hang did not reach C")
		}
		hc.stop()
		srWaitDone(ctx, t, sAC)
		_, err := hang.Await(ctx)
		tpRequireBrokenPath(t, err)
		release()

		// B's later messages break the same way, pipelined ones too.
		for _, p := range []*Promise{
			obj.Send("push", 0),
			obj.Send("make-child", "late"),
			obj.Send("make-child", "later").Send("name"),
		} {
			_, err := p.Await(ctx)
			tpRequireBrokenPath(t, err)
		}
		require.NoError(t, obj.SendOnly("push", 1))

		// A, whose own connection it was, sees ErrDisconnected.
		_, err = objA.Send("next").Await(ctx)
		require.ErrorIs(t, err, ErrDisconnected)

		// B's connection to A is healthy.
		require.NoError(t, sBA.Err())
		require.NoError(t, sAB.Err())
		select {
		case <-sBA.Done():
			t.Fatal("B's session with A ended")
		default:
		}
		srHello(ctx, t, sBA.Fetch("ping").Ref(), "B", "A")
		require.Equal(t, []*Session{sAB}, aNode.Sessions())
		obj.Release()
	}()
	tpWaitStats(t, []*Session{sBA, sAB}, []Stats{{}, {}})

	// A enlivens again once C is back; B gets the new reference.
	hc2 := srServe(t, cNode, hc.addr, "", nil, nil)
	defer hc2.stop()
	func() {
		objA2, err := aNode.Enliven(ctx, sr)
		require.NoError(t, err)
		require.Equal(t, "kept: again", tpDecode[string](ctx, t, sAB.Fetch("inbox").Send("keep", tpBox{"again", objA2})))
		obj2 := (<-inbox.got).Obj
		require.Equal(t, 500, tpDecode[int](ctx, t, obj2.Send("push", 500)), "the same object on C")
		obj2.Release()
		objA2.Release()
	}()
	tpWaitStats(t, []*Session{sBA, sAB}, []Stats{{}, {}})
}

// TestThirdPartyReferenceInResult: all three over Pipe; B gets C's object
// as the result of a message to A, and A's session with C is closed by A.
func TestThirdPartyReferenceInResult(t *testing.T) {
	ctx := srCtx(t)
	vatA, vatC := NewVat("a"), NewVat("c")
	defer vatA.Close()
	defer vatC.Close()
	var aNode, bNode, cNode Node
	defer aNode.Close()
	defer bNode.Close()
	defer cNode.Close()
	cNode.Bind("obj", vatC.Spawn(&tpTarget{name: "obj"}))
	sAC, sCA, err := Pipe(ctx, &aNode, &cNode)
	require.NoError(t, err)
	defer sCA.Close()
	defer sAC.Close()
	res, err := sAC.Fetch("obj").Await(ctx)
	require.NoError(t, err)
	objA, err := res.Ref()
	require.NoError(t, err)
	aNode.Bind("broker", vatA.Spawn(&tpBroker{obj: objA}))
	sBA, sAB, err := Pipe(ctx, &bNode, &aNode)
	require.NoError(t, err)
	defer sAB.Close()
	defer sBA.Close()

	func() {
		broker := sBA.Fetch("broker")
		// Messages pipelined to the result of get, before it is known.
		var ps []*Promise
		for i := range 200 {
			ps = append(ps, broker.Send("get").Send("push", i))
		}
		for i, p := range ps {
			require.Equal(t, i, tpDecode[int](ctx, t, p))
		}
		obj, err := broker.Send("get").Await(ctx)
		require.NoError(t, err)
		ref, err := obj.Ref()
		require.NoError(t, err)
		require.True(t, ref.t.(*importRef).s == sBA)
		require.Equal(t, 200, tpDecode[int](ctx, t, ref.Send("next")))
		// Every get answers the same reference, one import on B.
		again, err := broker.Send("get").Await(ctx)
		require.NoError(t, err)
		ref2, err := again.Ref()
		require.NoError(t, err)
		require.True(t, ref == ref2)
		// Handed back to A, it is A's own import from C again.
		require.True(t, tpDecode[bool](ctx, t, sBA.Fetch("broker").Send("get").Send("is-local", ref)))
	}()
	tpWaitStats(t, []*Session{sBA, sAB, sAC, sCA}, []Stats{{}, {}, {Imports: 1}, {Exports: 1}})

	func() {
		obj, err := sBA.Fetch("broker").Send("get").Await(ctx)
		require.NoError(t, err)
		ref, err := obj.Ref()
		require.NoError(t, err)
		require.NoError(t, sAC.Close())
		srWaitDone(ctx, t, sCA)
		_, err = ref.Send("push", 200).Await(ctx)
		tpRequireBrokenPath(t, err)
		_, err = sBA.Fetch("broker").Send("get").Send("next").Await(ctx)
		tpRequireBrokenPath(t, err)
		_, err = objA.Send("next").Await(ctx)
		require.ErrorIs(t, err, ErrDisconnected)
		require.Error(t, sAC.Err())
		require.NoError(t, sBA.Err())
	}()
	tpWaitStats(t, []*Session{sBA, sAB}, []Stats{{}, {}})
}
