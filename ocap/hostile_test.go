package ocap

import (
	"bytes"
	"context"
	"errors"
	"math"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

// rawPeer is a hand-driven peer: a plain *bokbok.Conn that writes
// capability messages made by the test, connected to a Node over a
// net.Pipe.
type rawPeer struct {
	t    *testing.T
	ctx  context.Context
	conn *bokbok.Conn
	sess *Session // the node's session for this connection
	in   chan rawOp
}

// rawOp is a capability message the node sent, its fields undecoded.
type rawOp struct {
	op     string
	fields []msgpack.RawMessage
}

func newRawPeer(t *testing.T, ctx context.Context, n *Node) *rawPeer {
	t.Helper()
	p := &rawPeer{t: t, ctx: ctx, in: make(chan rawOp, 1024)}
	h := bokbok.HandlerFunc(func(_ context.Context, req *bokbok.Request) (any, error) {
		if op, ok := parseRawOp(req.Raw()); ok && req.IsNotification() {
			p.in <- op
		}
		return nil, nil
	})
	ca, cb := net.Pipe()
	ch := make(chan *Session, 1)
	go func() {
		s, err := n.NewSession(ctx, cb, nil)
		if err != nil {
			t.Errorf("NewSession: %v", err)
		}
		ch <- s
	}()
	conn, err := bokbok.NewConn(ctx, ca, &bokbok.Config{Handler: h})
	require.NoError(t, err)
	p.conn = conn
	p.sess = <-ch
	require.NotNil(t, p.sess)
	t.Cleanup(func() {
		conn.Close()
		p.sess.Close()
	})
	return p
}

func parseRawOp(b []byte) (rawOp, bool) {
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	n, err := dec.DecodeArrayLen()
	if err != nil || n < 1 {
		return rawOp{}, false
	}
	op, err := dec.DecodeString()
	if err != nil {
		return rawOp{}, false
	}
	r := rawOp{op: op}
	for i := 1; i < n; i++ {
		f, err := dec.DecodeRaw()
		if err != nil {
			return rawOp{}, false
		}
		r.fields = append(r.fields, f)
	}
	return r, true
}

// field decodes field i (0 is the first after the operation name).
func (o rawOp) field(t *testing.T, i int, out any) {
	t.Helper()
	require.Greater(t, len(o.fields), i, "%s has field %d", o.op, i)
	require.NoError(t, msgpack.Unmarshal(o.fields[i], out))
}

// send writes a capability message made of fields (msgpack.RawMessage
// fields are written as they are).
func (p *rawPeer) send(fields ...any) {
	p.t.Helper()
	b, err := msgpack.Marshal(fields)
	require.NoError(p.t, err)
	p.sendRaw(b)
}

func (p *rawPeer) sendRaw(b []byte) {
	p.t.Helper()
	require.NoError(p.t, p.conn.Notify(p.ctx, msgpack.RawMessage(b)))
}

// next returns the next capability message from the node.
func (p *rawPeer) next() rawOp {
	p.t.Helper()
	select {
	case op := <-p.in:
		return op
	case <-time.After(5 * time.Second):
		p.t.Fatal("no capability message from the node")
	}
	return rawOp{}
}

// expectReturn reads the next message, requires it to be op:return for
// question q, and returns its reference descriptors.
func (p *rawPeer) expectReturn(q uint64) [][2]uint64 {
	p.t.Helper()
	op := p.next()
	require.Equal(p.t, opReturn, op.op, "%+v", op)
	var gotQ uint64
	var refs [][2]uint64
	op.field(p.t, 0, &gotQ)
	op.field(p.t, 2, &refs)
	require.Equal(p.t, q, gotQ)
	return refs
}

// expectBreak reads the next message and requires it to be op:break for
// question q with the given code.
func (p *rawPeer) expectBreak(q uint64, code string) {
	p.t.Helper()
	op := p.next()
	require.Equal(p.t, opBreak, op.op, "%+v", op)
	var gotQ uint64
	var gotCode, msg string
	op.field(p.t, 0, &gotQ)
	op.field(p.t, 1, &gotCode)
	op.field(p.t, 2, &msg)
	require.Equal(p.t, q, gotQ)
	require.Equal(p.t, code, gotCode, "message: %s", msg)
}

// fetch asks the bootstrap object for name as question q and returns the
// export id the node answers.
func (p *rawPeer) fetch(q uint64, name string) uint64 {
	p.t.Helper()
	p.send(opDeliver, []any{descYourExport, 0}, "fetch", []any{name}, []any{}, q)
	refs := p.expectReturn(q)
	require.Len(p.t, refs, 1)
	require.EqualValues(p.t, descMyExport, refs[0][0])
	return refs[0][1]
}

// refArg is a msgpack array of one reference, index i of the message's
// reference list (PROTOCOL.md §19.3).
func refArg(i byte) msgpack.RawMessage {
	return msgpack.RawMessage{0x91, 0xd6, byte(refExtID), 0, 0, 0, i}
}

// probe counts the messages that reach it.
type probe struct{ hits int }

func (p *probe) Hit() int  { p.hits++; return p.hits }
func (p *probe) Hits() int { return p.hits }

// TestHostilePeer drives a node with hand-made capability messages. Names
// that were never handed out, or no longer are, fail the message with
// ocap.no_object and never reach an object; the session goes on. Messages
// that break the protocol end the session with a *ProtocolError, after
// telling the peer why (op:abort). Either way the node's other sessions
// keep working.
func TestHostilePeer(t *testing.T) {
	const probeName = "probe"
	cases := []struct {
		name string
		run  func(t *testing.T, p *rawPeer)
		// violation, if set, is part of the reason of the *ProtocolError
		// the session must end with; if empty, the session must go on.
		violation string
	}{
		// Names that do not exist: the message fails, the session goes on.
		{name: "deliver to an export never handed out", run: func(t *testing.T, p *rawPeer) {
			for q, id := range []uint64{1, 2, 1 << 40} {
				p.send(opDeliver, []any{descYourExport, id}, "hit", []any{}, []any{}, q+1)
				p.expectBreak(uint64(q+1), CodeNoObject)
			}
		}},
		{name: "deliver to an answer never asked for", run: func(t *testing.T, p *rawPeer) {
			p.send(opDeliver, []any{descYourAnswer, 7}, "hit", []any{}, []any{}, 1)
			p.expectBreak(1, CodeNoObject)
		}},
		{name: "deliver to a released export", run: func(t *testing.T, p *rawPeer) {
			id := p.fetch(1, probeName)
			p.send(opRelease, id, 1)
			p.send(opDeliver, []any{descYourExport, id}, "hit", []any{}, []any{}, 2)
			p.expectBreak(2, CodeNoObject)
		}},
		{name: "reference to a released export in the arguments", run: func(t *testing.T, p *rawPeer) {
			echoID := p.fetch(1, "echo")
			id := p.fetch(2, probeName)
			p.send(opRelease, id, 1)
			p.send(opDeliver, []any{descYourExport, echoID}, "echo-ref", refArg(0), []any{[]any{descYourExport, id}}, 3)
			p.expectBreak(3, CodeNoObject)
		}},
		{name: "deliver to a finished answer", run: func(t *testing.T, p *rawPeer) {
			p.fetch(1, "echo")
			p.send(opFinish, 1)
			p.send(opDeliver, []any{descYourAnswer, 1}, "ping", []any{}, []any{}, 2)
			p.expectBreak(2, CodeNoObject)
		}},
		{name: "deliver to its own answer", run: func(t *testing.T, p *rawPeer) {
			// The answer to question 1 does not exist before this message.
			p.send(opDeliver, []any{descYourAnswer, 1}, "ping", []any{}, []any{}, 1)
			p.expectBreak(1, CodeNoObject)
			p.send(opDeliver, []any{descYourExport, 0}, "fetch", []any{"echo"}, []any{[]any{descYourAnswer, 2}}, 2)
			p.expectBreak(2, CodeNoObject)
			p.send(opFinish, 1)
			p.send(opFinish, 2)
			require.Eventually(t, func() bool { return p.sess.Stats().Answers == 0 }, 5*time.Second, time.Millisecond)
		}},
		{name: "a one-way deliver to nothing is dropped", run: func(t *testing.T, p *rawPeer) {
			p.send(opDeliver, []any{descYourExport, 99}, "hit", []any{}, []any{}, nil)
			p.send(opDeliver, []any{descYourAnswer, 99}, "hit", []any{}, []any{}, nil)
		}},
		{name: "bad calls of the bootstrap object", run: func(t *testing.T, p *rawPeer) {
			boot := []any{descYourExport, 0}
			p.send(opDeliver, boot, "fetch", []any{"no such name"}, []any{}, 1)
			p.expectBreak(1, CodeNotFound)
			p.send(opDeliver, boot, "fetch", []any{1, 2}, []any{}, 2)
			p.expectBreak(2, CodeBadArgs)
			p.send(opDeliver, boot, "fetch", "not an array", []any{}, 3)
			p.expectBreak(3, CodeBadArgs)
			p.send(opDeliver, boot, "steal", []any{}, []any{}, 4)
			p.expectBreak(4, CodeNoMethod)
		}},
		{name: "reference index beyond the message's references", run: func(t *testing.T, p *rawPeer) {
			id := p.fetch(1, "echo")
			p.send(opDeliver, []any{descYourExport, id}, "echo-ref", refArg(3), []any{}, 2)
			p.expectBreak(2, CodeBadArgs)
			bad := msgpack.RawMessage{0x91, 0xd5, byte(refExtID), 0, 0} // a 2-byte reference
			p.send(opDeliver, []any{descYourExport, id}, "echo-ref", bad, []any{}, 3)
			p.expectBreak(3, CodeBadArgs)
		}},
		{name: "bad references are found wherever they are, and their receipts go back", run: func(t *testing.T, p *rawPeer) {
			id := p.fetch(1, "echo")
			mine := []any{[]any{descMyExport, 5}, []any{descMyExport, 6}, []any{descMyExport, 5}}
			for q, args := range []msgpack.RawMessage{
				// [[ref 0, {"k": ref 3}]]: one good reference, one beyond the list.
				{0x91, 0x92, 0xd6, 0x62, 0, 0, 0, 0, 0x81, 0xa1, 'k', 0xd6, 0x62, 0, 0, 0, 3},
				// A reference of 4 bytes, but as ext 8 rather than fixext 4.
				{0x91, 0xc7, 0x04, 0x62, 0, 0, 0, 0},
				// A reference of 8 bytes (fixext 8).
				{0x91, 0xd7, 0x62, 0, 0, 0, 0, 0, 0, 0, 0},
			} {
				q := uint64(q + 2)
				p.send(opDeliver, []any{descYourExport, id}, "echo", args, mine, q)
				// The receipts of exports 5 (two) and 6 come straight back,
				// then the break.
				for _, want := range [][2]uint64{{5, 2}, {6, 1}} {
					op := p.next()
					require.Equal(t, opRelease, op.op, "%+v", op)
					var got [2]uint64
					op.field(t, 0, &got[0])
					op.field(t, 1, &got[1])
					require.Equal(t, want, got)
				}
				p.expectBreak(q, CodeBadArgs)
			}
			require.Zero(t, p.sess.Stats().Imports)
			// Extension 98 inside another extension's payload (here a
			// timestamp's), or bytes that look like one in a string, are
			// not references.
			inner := msgpack.RawMessage{0x92, 0xd7, 0xff, 0xd6, 0x62, 0, 0, 0, 9, 0, 0, 0xa6, 0xd6, 0x62, 0, 0, 0, 9}
			p.send(opDeliver, []any{descYourExport, id}, "echo", msgpack.RawMessage(append([]byte{0x91}, inner...)), []any{}, 5)
			p.expectReturn(5)
			// A one-way message with a bad reference is dropped; its
			// receipts go back all the same.
			p.send(opDeliver, []any{descYourExport, id}, "echo", refArg(1), []any{[]any{descMyExport, 7}}, nil)
			op := p.next()
			require.Equal(t, opRelease, op.op, "%+v", op)
		}},
		{name: "return naming nothing breaks the question, and its receipts go back", run: func(t *testing.T, p *rawPeer) {
			relay := p.fetch(1, "relay")
			p.send(opDeliver, []any{descYourExport, relay}, "relay", refArg(0), []any{[]any{descMyExport, 5}}, 2)
			require.Equal(t, opDeliver, p.next().op) // the node's question 1, to export 5
			p.send(opReturn, 1, refValue, []any{[]any{descMyExport, 6}, []any{descYourExport, 99}})
			// The receipt of export 6 comes back (the garbage collector may
			// release export 5 meanwhile), then the relay's answer, which
			// followed question 1, breaks.
			released := map[uint64]uint64{}
			for {
				op := p.next()
				if op.op == opFinish {
					// The node finishing its own question 1, whenever its
					// answer is settled or collected: not part of the check.
					continue
				}
				if op.op != opRelease {
					require.Equal(t, opBreak, op.op, "%+v", op)
					var q uint64
					var code string
					op.field(t, 0, &q)
					op.field(t, 1, &code)
					require.EqualValues(t, 2, q)
					require.Equal(t, CodeNoObject, code)
					break
				}
				var id, n uint64
				op.field(t, 0, &id)
				op.field(t, 1, &n)
				released[id] += n
			}
			require.EqualValues(t, 1, released[6])
		}},
		{name: "messages that are not capability messages", run: func(t *testing.T, p *rawPeer) {
			require.NoError(t, p.conn.Notify(p.ctx, []any{"hello", 1}))
			require.NoError(t, p.conn.Notify(p.ctx, "op:deliver"))
			_, err := p.conn.Request(p.ctx, []any{"hello"})
			requireRemoteCode(t, err, bokbok.CodeNoHandler)
			_, err = p.conn.Request(p.ctx, []any{opDeliver, []any{descYourExport, 0}, "fetch", []any{probeName}, []any{}, 1})
			requireRemoteCode(t, err, CodeBadArgs) // capability messages are notifications
		}},

		// Protocol violations: the session ends.
		{name: "finish twice", violation: "op:finish for answer 1", run: func(t *testing.T, p *rawPeer) {
			p.fetch(1, "echo")
			p.send(opFinish, 1)
			p.send(opFinish, 1)
		}},
		{name: "finish an answer never asked for", violation: "op:finish for answer 5", run: func(t *testing.T, p *rawPeer) {
			p.send(opFinish, 5)
		}},
		{name: "release twice", violation: "op:release of export 1, which is not exported", run: func(t *testing.T, p *rawPeer) {
			id := p.fetch(1, probeName)
			require.EqualValues(t, 1, id)
			p.send(opRelease, id, 1)
			p.send(opRelease, id, 1)
		}},
		{name: "release more than was sent", violation: "op:release of 3 references to export 1, which was sent 2 times", run: func(t *testing.T, p *rawPeer) {
			p.fetch(1, probeName)
			p.fetch(2, probeName)
			p.send(opRelease, 1, 3)
		}},
		{name: "release none", violation: "op:release of 0 references", run: func(t *testing.T, p *rawPeer) {
			p.fetch(1, probeName)
			p.send(opRelease, 1, 0)
		}},
		{name: "release an export never handed out", violation: "op:release of export 8", run: func(t *testing.T, p *rawPeer) {
			p.send(opRelease, 8, 1)
		}},
		{name: "release the bootstrap object", violation: "op:release of export 0", run: func(t *testing.T, p *rawPeer) {
			p.send(opRelease, 0, 1)
		}},
		{name: "return for a question never asked", violation: "op:return for question 3", run: func(t *testing.T, p *rawPeer) {
			p.send(opReturn, 3, nil, []any{})
		}},
		{name: "break for a question never asked", violation: "op:break for question 3", run: func(t *testing.T, p *rawPeer) {
			p.send(opBreak, 3, "x", "y")
		}},
		// Question ids (§19.4): each greater than every earlier one.
		{name: "question id 0", violation: "question id 0", run: func(t *testing.T, p *rawPeer) {
			p.send(opDeliver, []any{descYourExport, 0}, "fetch", []any{"echo"}, []any{}, 0)
		}},
		{name: "question id in use", violation: "question id 1 is not greater than 1", run: func(t *testing.T, p *rawPeer) {
			p.fetch(1, "echo")
			p.send(opDeliver, []any{descYourExport, 0}, "fetch", []any{"echo"}, []any{}, 1)
		}},
		{name: "question id of a finished answer", violation: "question id 1 is not greater than 2", run: func(t *testing.T, p *rawPeer) {
			p.fetch(1, "echo")
			p.fetch(2, "echo")
			p.send(opFinish, 1)
			require.Eventually(t, func() bool { return p.sess.Stats().Answers == 1 }, 5*time.Second, time.Millisecond)
			p.send(opDeliver, []any{descYourExport, 0}, "fetch", []any{"echo"}, []any{}, 1)
		}},
		{name: "question id of a question that failed", violation: "question id 1 is not greater than 1", run: func(t *testing.T, p *rawPeer) {
			p.send(opDeliver, []any{descYourExport, 99}, "hit", []any{}, []any{}, 1)
			p.expectBreak(1, CodeNoObject)
			p.send(opFinish, 1)
			p.send(opDeliver, []any{descYourExport, 0}, "fetch", []any{"echo"}, []any{}, 1)
		}},
		{name: "decreasing question id", violation: "question id 3 is not greater than 5", run: func(t *testing.T, p *rawPeer) {
			p.fetch(5, "echo")
			p.send(opDeliver, []any{descYourExport, 0}, "fetch", []any{"echo"}, []any{}, 3)
		}},
		{name: "question ids may skip numbers", run: func(t *testing.T, p *rawPeer) {
			p.fetch(3, "echo")
			p.send(opDeliver, []any{descYourExport, 0}, "fetch", []any{"echo"}, []any{}, nil) // no id
			p.fetch(10, "echo")
			p.fetch(500, "echo")
			p.fetch(501, "echo") // and 1000 next
		}},
		{name: "2^64-1 is the last question id", violation: "question id 18446744073709551615 is not greater than 18446744073709551615", run: func(t *testing.T, p *rawPeer) {
			p.fetch(1<<63, "echo")
			p.fetch(math.MaxUint64, "echo") // allowed: answered
			p.send(opFinish, uint64(math.MaxUint64))
			p.send(opDeliver, []any{descYourExport, 0}, "fetch", []any{"echo"}, []any{}, uint64(math.MaxUint64))
		}},
		{name: "return with a reference index beyond its references", violation: "op:return for question 1: ocap: reference index 1, but the message carries 1 references", run: func(t *testing.T, p *rawPeer) {
			relay := p.fetch(1, "relay")
			p.send(opDeliver, []any{descYourExport, relay}, "relay", refArg(0), []any{[]any{descMyExport, 5}}, 2)
			op := p.next() // the relay's message to the peer's export 5
			require.Equal(t, opDeliver, op.op)
			var q uint64
			op.field(t, 4, &q)
			require.EqualValues(t, 1, q)
			p.send(opReturn, q, msgpack.RawMessage{0xd6, 0x62, 0, 0, 0, 1}, []any{[]any{descMyExport, 6}})
		}},
		{name: "return with a reference that is not fixext 4", violation: "op:return for question 1: ocap: a reference in an ext 8", run: func(t *testing.T, p *rawPeer) {
			relay := p.fetch(1, "relay")
			p.send(opDeliver, []any{descYourExport, relay}, "relay", refArg(0), []any{[]any{descMyExport, 5}}, 2)
			require.Equal(t, opDeliver, p.next().op)
			p.send(opReturn, 1, msgpack.RawMessage{0xc7, 4, 0x62, 0, 0, 0, 0}, []any{[]any{descMyExport, 6}})
		}},
		{name: "deliver to the sender's own object", violation: "op:deliver to an object of the sender's own", run: func(t *testing.T, p *rawPeer) {
			p.send(opDeliver, []any{descMyExport, 1}, "hit", []any{}, []any{}, 1)
		}},
		{name: "unknown operation", violation: `unknown operation "op:frobnicate"`, run: func(t *testing.T, p *rawPeer) {
			p.send("op:frobnicate", 1, 2)
		}},
		{name: "malformed: too few fields", violation: "malformed op:deliver", run: func(t *testing.T, p *rawPeer) {
			p.send(opDeliver, []any{descYourExport, 0}, "fetch")
		}},
		{name: "malformed: descriptor not an array", violation: "malformed op:deliver", run: func(t *testing.T, p *rawPeer) {
			p.send(opDeliver, "bootstrap", "fetch", []any{"echo"}, []any{}, 1)
		}},
		{name: "malformed: descriptor of three fields", violation: "malformed op:deliver", run: func(t *testing.T, p *rawPeer) {
			p.send(opDeliver, []any{descYourExport, 0, 0}, "fetch", []any{"echo"}, []any{}, 1)
		}},
		{name: "malformed: unknown descriptor kind", violation: "descriptor kind 9", run: func(t *testing.T, p *rawPeer) {
			p.send(opDeliver, []any{9, 0}, "fetch", []any{"echo"}, []any{}, 1)
		}},
		{name: "malformed: method not a string", violation: "malformed op:deliver", run: func(t *testing.T, p *rawPeer) {
			p.send(opDeliver, []any{descYourExport, 0}, 42, []any{"echo"}, []any{}, 1)
		}},
		{name: "malformed: references not an array", violation: "malformed op:deliver", run: func(t *testing.T, p *rawPeer) {
			p.send(opDeliver, []any{descYourExport, 0}, "fetch", []any{"echo"}, "refs", 1)
		}},
		{name: "malformed: reference descriptor kind 0", violation: "descriptor kind 0", run: func(t *testing.T, p *rawPeer) {
			p.send(opDeliver, []any{descYourExport, 0}, "fetch", []any{"echo"}, []any{[]any{0, 1}}, 1)
		}},
		{name: "malformed: question not a number", violation: "malformed op:deliver", run: func(t *testing.T, p *rawPeer) {
			p.send(opDeliver, []any{descYourExport, 0}, "fetch", []any{"echo"}, []any{}, "one")
		}},
		{name: "malformed: release of a string", violation: "malformed op:release", run: func(t *testing.T, p *rawPeer) {
			p.send(opRelease, "one", 1)
		}},
		{name: "malformed: return without references", violation: "malformed op:return", run: func(t *testing.T, p *rawPeer) {
			p.send(opReturn, 1, nil)
		}},
		{name: "malformed: break without a message", violation: "malformed op:break", run: func(t *testing.T, p *rawPeer) {
			p.send(opBreak, 1, "code")
		}},
		{name: "malformed: finish of nothing", violation: "malformed op:finish", run: func(t *testing.T, p *rawPeer) {
			p.send(opFinish)
		}},
		{name: "malformed: abort without a reason", violation: "malformed op:abort", run: func(t *testing.T, p *rawPeer) {
			p.send(opAbort, 5)
		}},
		{name: "malformed: truncated", violation: "malformed op:deliver", run: func(t *testing.T, p *rawPeer) {
			b, err := msgpack.Marshal([]any{opDeliver, []any{descYourExport, 0}, "fetch"})
			require.NoError(t, err)
			b[0] = 0x96 // claims six elements, has three
			// The core drops a notification that is not well-formed
			// msgpack before any handler sees it; the node must refuse
			// one that reaches it all the same.
			_, _ = p.sess.node.serveCap(p.sess.Conn(), b, true)
		}},
	}

	ctx := testCtx(t)
	v := newTestVat(t, "node")
	var node, friend Node
	probeRef := v.Spawn(&probe{})
	node.Bind(probeName, probeRef)
	node.Bind("echo", v.Spawn(echo{}))
	node.Bind("relay", v.Spawn(relayActor{}))
	friendSess, _ := pipeNodes(t, ctx, &friend, &node)
	healthy := func(t *testing.T) {
		t.Helper()
		r := awaitRef(t, ctx, friendSess.Fetch("echo"))
		require.Equal(t, "pong", awaitValue[string](t, ctx, r.Send("ping")), "the node's other session works")
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newRawPeer(t, ctx, &node)
			tc.run(t, p)
			if tc.violation == "" {
				// The session goes on: a fresh fetch is answered.
				p.fetch(1000, "echo")
				require.NoError(t, p.sess.Err())
			} else {
				var op rawOp
				for op = p.next(); op.op != opAbort; op = p.next() {
				}
				var reason string
				op.field(t, 0, &reason)
				require.Contains(t, reason, tc.violation, "the node tells the peer why")
				select {
				case <-p.sess.Done():
				case <-time.After(5 * time.Second):
					t.Fatal("the session did not end")
				}
				var perr *ProtocolError
				require.True(t, errors.As(p.sess.Err(), &perr), "Err: %v", p.sess.Err())
				require.False(t, perr.Remote)
				require.Contains(t, perr.Reason, tc.violation)
				select {
				case <-p.conn.Done():
				case <-time.After(5 * time.Second):
					t.Fatal("the connection did not close")
				}
				require.Equal(t, Stats{}, p.sess.Stats())
			}
			healthy(t)
			require.Zero(t, awaitValue[int](t, ctx, probeRef.Send("hits")), "no message reached an object it was not handed")
		})
	}
}

// TestPeerAbort: a peer that gives up sends op:abort; the session ends
// with a *ProtocolError that says the peer detected it.
func TestPeerAbort(t *testing.T) {
	ctx := testCtx(t)
	var node Node
	p := newRawPeer(t, ctx, &node)
	p.send(opAbort, "you sent nonsense")
	select {
	case <-p.sess.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the session did not end")
	}
	var perr *ProtocolError
	require.ErrorAs(t, p.sess.Err(), &perr)
	require.True(t, perr.Remote)
	require.Equal(t, "you sent nonsense", perr.Reason)
	require.Contains(t, perr.Error(), "peer aborted")
}

// TestImportsAreCounted: the node counts every copy of a reference it
// receives and releases all of them at once when its program drops the
// reference.
func TestImportsAreCounted(t *testing.T) {
	ctx := testCtx(t)
	v := newTestVat(t, "node")
	var node Node
	k := newKeeper()
	node.Bind("keeper", v.Spawn(k))
	p := newRawPeer(t, ctx, &node)
	keeperID := p.fetch(1, "keeper")
	// Three copies of the peer's export 5 in one message, two in another.
	var bd bundle
	args := func(n int) msgpack.RawMessage {
		bd.List = make([]Ref, n)
		for i := range bd.List {
			bd.List[i] = Ref{t: &importRef{}} // placeholders, encoded as index i
		}
		bd.Inner.R = Ref{t: &importRef{}} // index n
		pl, err := encodePayload([]any{bd})
		require.NoError(t, err)
		return pl.data
	}
	refs := func(n int) []any {
		out := []any{}
		for i := 0; i < n+1; i++ { // the list and the struct's R
			out = append(out, []any{descMyExport, 5})
		}
		return out
	}
	p.send(opDeliver, []any{descYourExport, keeperID}, "keep", msgpack.RawMessage(args(3)), refs(3), 2)
	p.expectReturn(2)
	p.send(opDeliver, []any{descYourExport, keeperID}, "keep", msgpack.RawMessage(args(2)), refs(2), 3)
	p.expectReturn(3)
	require.Equal(t, 1, p.sess.Stats().Imports)
	_, received := exportCounts(p.sess)
	require.EqualValues(t, 7, received)

	require.NoError(t, v.Do(ctx, func(context.Context) {
		for r := range k.kept {
			r.Release()
		}
	}))
	op := p.next()
	require.Equal(t, opRelease, op.op)
	var id, count uint64
	op.field(t, 0, &id)
	op.field(t, 1, &count)
	require.EqualValues(t, 5, id)
	require.EqualValues(t, 7, count, "one release for every copy received")
	require.Zero(t, p.sess.Stats().Imports)
}

// TestGuessedExportFails: a program that names an export of the peer it
// was never handed (here forged inside the package; on the wire it is a
// number) gets ocap.no_object, and the object behind that number, if any,
// is not reached.
func TestGuessedExportFails(t *testing.T) {
	ctx := testCtx(t)
	v := newTestVat(t, "b")
	var a, b Node
	probeRef := v.Spawn(&probe{})
	b.Bind("echo", v.Spawn(echo{}))
	sa, _ := pipeNodes(t, ctx, &a, &b)
	e := awaitRef(t, ctx, sa.Fetch("echo"))
	// The probe is not handed out, so it has no export id. Guess anyway.
	for id := uint64(1); id <= 5; id++ {
		guess := Ref{t: &importRef{s: sa, id: id}}
		if id == 1 {
			require.Equal(t, "pong", awaitValue[string](t, ctx, guess.Send("ping")), "export 1 is echo, handed out")
			continue
		}
		_, err := guess.Send("hit").Await(ctx)
		requireRemoteCode(t, err, CodeNoObject)
	}
	require.Zero(t, awaitValue[int](t, ctx, probeRef.Send("hits")))
	runtime.KeepAlive(e) // export 1 stays handed out
}

// TestSlowActorDoesNotBlockReader: an actor blocked in its turn holds up
// its own vat only. Messages for it pile up (more than the connection's
// notification window) and another actor, in another vat, on the same
// connection still answers at once.
func TestSlowActorDoesNotBlockReader(t *testing.T) {
	ctx := testCtx(t)
	slowVat, fastVat := newTestVat(t, "slow"), newTestVat(t, "fast")
	var a, b Node
	slow := newBlocker(Ref{})
	release := releaser(t, slow)
	b.Bind("slow", slowVat.Spawn(slow))
	b.Bind("fast", fastVat.Spawn(echo{}))
	sa, sb := pipeNodes(t, ctx, &a, &b)
	func() {
		s := awaitRef(t, ctx, sa.Fetch("slow"))
		f := awaitRef(t, ctx, sa.Fetch("fast"))
		first := s.Send("block", "first")
		require.Equal(t, "first", <-slow.entered)
		var queued []*Promise
		for i := 0; i < 3*bokbok.DefaultNotifyWindow; i++ {
			queued = append(queued, s.Send("ping"))
		}
		for i := 0; i < 10; i++ {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			r, err := f.Send("ping").Await(pctx)
			cancel()
			require.NoError(t, err, "the fast actor answers while the slow one is in its turn")
			var s string
			require.NoError(t, r.Decode(&s))
			require.Equal(t, "pong", s)
		}
		require.False(t, first.Settled())
		release()
		require.Equal(t, "first", awaitValue[string](t, ctx, first))
		for _, q := range queued {
			require.Equal(t, "pong", awaitValue[string](t, ctx, q))
		}
	}()
	requireDrained(t, sa, sb)
}

// TestQuestionIDsUsedUp: question ids are never reused on a connection, so
// a session that has asked question 2^64-1 (the largest id, which the peer
// accepts) asks no more: later messages that need an answer break at
// once, and messages that need none still go.
func TestQuestionIDsUsedUp(t *testing.T) {
	ctx := testCtx(t)
	v := newTestVat(t, "b")
	var a, b Node
	probeRef := v.Spawn(&probe{})
	b.Bind("echo", v.Spawn(echo{}))
	b.Bind("probe", probeRef)
	sa, sb := pipeNodes(t, ctx, &a, &b)
	e := awaitRef(t, ctx, sa.Fetch("echo"))
	pr := awaitRef(t, ctx, sa.Fetch("probe"))
	sa.mu.Lock()
	sa.nextQ = math.MaxUint64
	sa.mu.Unlock()
	require.Equal(t, "pong", awaitValue[string](t, ctx, e.Send("ping")), "2^64-1 is a question id")
	_, err := e.Send("ping").Await(ctx)
	require.ErrorIs(t, err, errQuestionsUsedUp)
	require.NoError(t, pr.SendOnly("hit"))
	require.Eventually(t, func() bool { return awaitValue[int](t, ctx, probeRef.Send("hits")) == 1 }, 5*time.Second, time.Millisecond)
	require.NoError(t, sa.Err())
	require.NoError(t, sb.Err())
}
