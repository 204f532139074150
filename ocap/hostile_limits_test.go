package ocap

import (
	"context"
	"errors"
	"runtime/debug"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

// Each test here plays a hostile peer against a real node over loopback
// TCP and checks that the node survives, bounds what it holds, ends the
// session or breaks the messages with the documented error, returns to
// its goroutines, and serves a well-behaved peer meanwhile.

// relayQuestion makes the node's relay answer question q with a promise
// for a message to the peer's export id, and returns the question the
// node asked the peer for that message.
func relayQuestion(p *tcpPeer, relayID, q, id uint64) uint64 {
	p.t.Helper()
	require.True(p.t, p.send(opDeliver, []any{descYourExport, relayID}, "relay", refArg(0), []any{[]any{descMyExport, id}}, q))
	op := p.waitFor("op:deliver to the peer's object", func(o rawOp) bool {
		if o.op != opDeliver {
			return false
		}
		var to [2]uint64
		return msgpack.Unmarshal(o.fields[0], &to) == nil && to == [2]uint64{descYourExport, id}
	})
	var nq uint64
	op.field(p.t, 4, &nq)
	return nq
}

// TestHostilePromiseCycle: a peer makes two answers resolve to each
// other (each answer follows a question to the peer, which the peer
// answers with the other answer). Messages to either, whether they were
// waiting before the cycle closed or sent after, break with
// ocap.promise_cycle; nothing hangs.
func TestHostilePromiseCycle(t *testing.T) {
	var node Node
	f := newHostileFixture(t, &node)
	p := newTCPPeer(t, f.ctx, &node, false)
	relayID := p.fetch(1, "relay")
	qa := relayQuestion(p, relayID, 2, 5) // answer 2 follows the node's question qa
	qb := relayQuestion(p, relayID, 3, 6) // answer 3 follows qb
	// Waiting on answer 2 before the cycle closes.
	require.True(t, p.send(opDeliver, []any{descYourAnswer, 2}, "ping", []any{}, []any{}, 4))
	require.True(t, p.send(opReturn, qa, refValue, []any{[]any{descYourAnswer, 3}}))
	require.True(t, p.send(opReturn, qb, refValue, []any{[]any{descYourAnswer, 2}}))
	p.expectBreak(4, CodePromiseCycle)
	// Sent after.
	require.True(t, p.send(opDeliver, []any{descYourAnswer, 3}, "ping", []any{}, []any{}, 5))
	p.expectBreak(5, CodePromiseCycle)
	require.True(t, p.send(opDeliver, []any{descYourAnswer, 2}, "ping", []any{}, []any{}, 6))
	p.expectBreak(6, CodePromiseCycle)
	require.NoError(t, p.sess.Err())
	p.fetch(7, "echo")
	f.healthy()
}

// TestFulfilCycle: a resolver fulfilled with its own promise, or with a
// promise that settles as its own, breaks with ErrPromiseCycle instead of
// waiting forever, and so does every promise in the cycle.
func TestFulfilCycle(t *testing.T) {
	ctx := testCtx(t)
	p, r := NewPromise()
	require.ErrorIs(t, r.Fulfil(p), ErrPromiseCycle)
	_, err := p.Await(ctx)
	require.ErrorIs(t, err, ErrPromiseCycle)

	p1, r1 := NewPromise()
	p2, r2 := NewPromise()
	p3, r3 := NewPromise()
	require.NoError(t, r1.Fulfil(p2))
	require.NoError(t, r2.Fulfil(p3))
	require.ErrorIs(t, r3.Fulfil(p1), ErrPromiseCycle)
	for _, p := range []*Promise{p1, p2, p3} {
		_, err := p.Await(ctx)
		require.ErrorIs(t, err, ErrPromiseCycle)
	}

	// A promise fulfilled with a reference to itself: messages to it break.
	p4, r4 := NewPromise()
	require.NoError(t, r4.Fulfil(p4.Ref()))
	_, err = p4.Send("ping").Await(ctx)
	require.ErrorIs(t, err, ErrPromiseCycle)
	// And one fulfilled with a promise that resolved to a reference to it.
	p5, r5 := NewPromise()
	p6, r6 := NewPromise()
	require.NoError(t, r6.Fulfil(p5.Ref()))
	require.ErrorIs(t, r5.Fulfil(p6), ErrPromiseCycle)
}

// TestHostileLongPipelineChain: a peer pipelines a long chain of messages,
// each sent to the answer of the one before, the first waiting on an
// answer that follows a question to the peer; then it settles that
// question. Whether the chain breaks or goes on to the peer, the node
// works through it without a stack frame per link (the test runs with a
// small stack limit).
func TestHostileLongPipelineChain(t *testing.T) {
	const links = 20000
	for _, how := range []string{"break", "return"} {
		t.Run(how, func(t *testing.T) {
			node := Node{MaxAnswers: links + 100}
			f := newHostileFixture(t, &node)
			p := newTCPPeer(t, f.ctx, &node, false)
			relayID := p.fetch(1, "relay")
			qa := relayQuestion(p, relayID, 2, 5)
			for i := uint64(2); i < links+2; i++ {
				if !p.send(opDeliver, []any{descYourAnswer, i}, "next", []any{}, []any{}, i+1) {
					t.Fatalf("the node stopped taking messages at link %d: %v", i, p.sess.Err())
				}
			}
			last := uint64(links + 2)
			before := heapInuse()
			defer debug.SetMaxStack(debug.SetMaxStack(4 << 20))
			if how == "break" {
				require.True(t, p.send(opBreak, qa, "test.gone", "the object is gone"))
				p.expectBreak(last, "test.gone")
			} else {
				require.True(t, p.send(opReturn, qa, refValue, []any{[]any{descMyExport, 9}}))
				// One op:deliver for the relay's message, then the chain.
				require.Eventually(t, func() bool { return p.count(opDeliver) == links+1 }, 20*time.Second, 5*time.Millisecond,
					"the chain goes on to the peer: %d of %d links", p.count(opDeliver)-1, links)
			}
			requireHeapBounded(t, before, 64<<20)
			require.NoError(t, p.sess.Err())
			f.healthy()
		})
	}
}

// TestHostilePendingLimit: messages pipelined to one unsettled answer
// beyond Node.MaxPendingPerPromise break with ocap.too_many_pending; the
// ones that waited go on, in order, once the answer resolves.
func TestHostilePendingLimit(t *testing.T) {
	const limit, extra = 64, 36
	node := Node{MaxPendingPerPromise: limit}
	f := newHostileFixture(t, &node)
	p := newTCPPeer(t, f.ctx, &node, false)
	relayID := p.fetch(1, "relay")
	qa := relayQuestion(p, relayID, 2, 5)
	for i := 0; i < limit+extra; i++ {
		require.True(t, p.send(opDeliver, []any{descYourAnswer, 2}, "m", []any{i}, []any{}, 100+i))
	}
	for i := limit; i < limit+extra; i++ {
		p.expectBreak(uint64(100+i), CodeTooManyPending)
	}
	require.True(t, p.send(opReturn, qa, refValue, []any{[]any{descMyExport, 9}}))
	for i := 0; i < limit; i++ {
		op := p.waitFor("a waiting message", func(o rawOp) bool { return o.op == opDeliver })
		var to [2]uint64
		var args []int
		op.field(t, 0, &to)
		op.field(t, 2, &args)
		require.Equal(t, [2]uint64{descYourExport, 9}, to)
		require.Equal(t, []int{i}, args, "in order")
	}
	require.NoError(t, p.sess.Err())
	f.healthy()
}

// TestHostileOpenAnswers: a peer that asks questions and never finishes
// them has its session aborted at Node.MaxAnswers.
func TestHostileOpenAnswers(t *testing.T) {
	node := Node{MaxAnswers: 2000}
	f := newHostileFixture(t, &node)
	p := newTCPPeer(t, f.ctx, &node, false)
	before := heapInuse()
	for q := uint64(1); q <= 50000 && p.send(opDeliver, []any{descYourExport, 0}, "fetch", []any{"echo"}, []any{}, q); q++ {
	}
	p.requireAborted("MaxAnswers")
	p.waitFor("op:abort", func(o rawOp) bool { return o.op == opAbort })
	requireHeapBounded(t, before, 64<<20)
	f.healthy()
}

// TestHostileStalledPeer: a peer that never takes the node's messages
// (it stops reading, so it grants no notifications) cannot make the node
// queue without bound: the session ends at Node.MaxQueuedMessages, or
// when a message waits longer than Node.SendTimeout. (The peer makes the
// node send many messages with few of its own: a delivery to nothing
// that carries many references is answered with one op:release each.)
func TestHostileStalledPeer(t *testing.T) {
	flood := func(p *tcpPeer, n int) {
		msg, err := msgpack.Marshal([]any{opDeliver, []any{descYourExport, 999}, "hit", []any{}})
		require.NoError(t, err)
		msg[0] = 0x96
		msg = append(msg, descList(n, 1)...)
		msg = append(msg, 0xc0) // no question
		require.True(t, p.sendRaw(msg))
	}
	t.Run("queue", func(t *testing.T) {
		node := Node{MaxQueuedMessages: 500, SendTimeout: time.Minute}
		f := newHostileFixture(t, &node)
		p := newTCPPeer(t, f.ctx, &node, true)
		before := heapInuse()
		for i := 0; i < 10 && p.sess.Err() == nil; i++ {
			flood(p, 1000)
		}
		p.requireAborted("MaxQueuedMessages")
		requireHeapBounded(t, before, 64<<20)
		f.healthy()
	})
	t.Run("timeout", func(t *testing.T) {
		node := Node{SendTimeout: 300 * time.Millisecond}
		f := newHostileFixture(t, &node)
		p := newTCPPeer(t, f.ctx, &node, true)
		flood(p, 2*bokbok.DefaultNotifyWindow)
		select {
		case <-p.sess.Done():
		case <-time.After(20 * time.Second):
			t.Fatal("the session did not end")
		}
		require.ErrorIs(t, p.sess.Err(), context.DeadlineExceeded)
		f.healthy()
	})
}

// TestHostileDescriptorFlood: one large delivery carrying more references
// than Node.MaxDescriptorsPerMessage aborts the session before anything
// is made for them.
func TestHostileDescriptorFlood(t *testing.T) {
	var node Node
	f := newHostileFixture(t, &node)
	p := newTCPPeer(t, f.ctx, &node, false)
	before := heapInuse()
	// 1.4 MB of descriptors: the core's own bound on what decoding a
	// notification may take lets it through.
	const n = 200000
	msg, err := msgpack.Marshal([]any{opDeliver, []any{descYourExport, 999}, "hit", []any{}})
	require.NoError(t, err)
	msg[0] = 0x96 // two more fields follow
	msg = append(msg, descList(n, 1)...)
	msg = append(msg, 0x01)
	require.True(t, p.sendRaw(msg))
	p.requireAborted("MaxDescriptorsPerMessage")
	msg = nil
	requireHeapBounded(t, before, 64<<20)
	f.healthy()
}

// TestHostileFailedDelivery: a delivery that fails (its target or one of
// its references names nothing) imports nothing: the references it
// carried go back at once with op:release, and no import is made.
func TestHostileFailedDelivery(t *testing.T) {
	var node Node
	f := newHostileFixture(t, &node)
	p := newTCPPeer(t, f.ctx, &node, false)
	echoID := p.fetch(1, "echo")
	refs := []any{[]any{descMyExport, 5}, []any{descMyExport, 5}, []any{descMyExport, 6}}
	require.True(t, p.send(opDeliver, []any{descYourExport, 999}, "hit", []any{}, refs, 2))
	p.expectBreak(2, CodeNoObject)
	require.Zero(t, p.sess.Stats().Imports, "no import is made")
	bad := append(refs, []any{descYourExport, 12345})
	require.True(t, p.send(opDeliver, []any{descYourExport, echoID}, "echo", refArg(0), bad, 3))
	p.expectBreak(3, CodeNoObject)
	require.Zero(t, p.sess.Stats().Imports, "no import is made")
	released := map[[2]uint64]int{}
	for i := 0; i < 4; i++ {
		op := p.waitFor("op:release", func(o rawOp) bool { return o.op == opRelease })
		var id, count uint64
		op.field(t, 0, &id)
		op.field(t, 1, &count)
		released[[2]uint64{id, count}]++
	}
	require.Equal(t, map[[2]uint64]int{{5, 2}: 2, {6, 1}: 2}, released)
	require.NoError(t, p.sess.Err())
	f.healthy()
}

// TestHostileImportFlood: a peer that makes the node hold more of its
// objects than Node.MaxImports has its session aborted.
func TestHostileImportFlood(t *testing.T) {
	node := Node{MaxImports: 100}
	f := newHostileFixture(t, &node)
	p := newTCPPeer(t, f.ctx, &node, false)
	hoardID := p.fetch(1, "hoard")
	for q := uint64(0); q < 5; q++ {
		list := make([]any, 40)
		refs := make([]any, 40)
		for i := range list {
			list[i] = msgpack.RawMessage{0xd6, byte(refExtID), 0, 0, 0, byte(i)}
			refs[i] = []any{descMyExport, 1000 + 40*q + uint64(i)}
		}
		args, err := msgpack.Marshal([]any{list})
		require.NoError(t, err)
		if !p.send(opDeliver, []any{descYourExport, hoardID}, "keep", msgpack.RawMessage(args), refs, q+2) {
			break
		}
	}
	p.requireAborted("MaxImports")
	f.healthy()
}

// TestGracefulDrain: once the peer has begun a graceful shutdown, the
// node can send no new capability messages; its session drops what it
// cannot send (a question breaks with bokbok.ErrShutdown) but keeps the
// connection until the requests in flight have been answered.
func TestGracefulDrain(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	node := Node{Fallback: bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
		close(entered)
		<-release
		return "done", nil
	})}
	f := newHostileFixture(t, &node)
	p := newTCPPeer(t, f.ctx, &node, false)
	p.fetch(1, "echo")
	answer := make(chan error, 1)
	go func() {
		resp, err := p.conn.Request(f.ctx, []any{"slow"})
		if err == nil {
			var s string
			err = resp.Decode(&s)
			if err == nil && s != "done" {
				err = errors.New("answer " + s)
			}
		}
		answer <- err
	}()
	<-entered
	shut := make(chan error, 1)
	go func() { shut <- p.conn.Shutdown(f.ctx) }()
	// The node learns of the shutdown; its question cannot be sent.
	var err error
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(f.ctx, 200*time.Millisecond)
		defer cancel()
		_, err = p.sess.Fetch("x").Await(ctx)
		return errors.Is(err, bokbok.ErrShutdown)
	}, 10*time.Second, 10*time.Millisecond, "last error: %v", err)
	require.ErrorIs(t, err, ErrDisconnected)
	select {
	case <-p.sess.Done():
		t.Fatalf("the session ended with requests in flight: %v", p.sess.Err())
	default:
	}
	close(release)
	require.NoError(t, <-answer, "the request in flight is answered")
	require.NoError(t, <-shut)
	select {
	case <-p.sess.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the session did not end")
	}
	f.healthy()
}

// TestHostileVatFlood: a peer that sends to an actor faster than it runs
// (here: its vat is held up) cannot make the vat queue its messages
// without bound: the session ends at Node.MaxVatQueued.
func TestHostileVatFlood(t *testing.T) {
	node := Node{MaxVatQueued: 200}
	f := newHostileFixture(t, &node)
	g := newGate(Ref{})
	node.Bind("gate", newTestVat(t, "gate").Spawn(g))
	t.Cleanup(func() { close(g.open) }) // before the vat closes: cleanups run last first
	p := newTCPPeer(t, f.ctx, &node, false)
	id := p.fetch(1, "gate")
	for i := 0; i < 1000 && p.sess.Err() == nil; i++ {
		if !p.send(opDeliver, []any{descYourExport, id}, "wait", []any{}, []any{}, nil) {
			break
		}
	}
	p.requireAborted("MaxVatQueued")
	f.healthy()
}
