package ocap

import (
	"context"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/internal/testutil"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/goleak"
)

// tcpPeer is a hand-driven hostile peer over a real loopback TCP
// connection: a plain *bokbok.Conn that writes capability messages made
// by the test. It keeps every capability message the node sends, unless
// it was made with stall: then, once connected, it reads nothing more
// from the socket (until the test ends), so it grants the node no more
// notifications.
type tcpPeer struct {
	t    *testing.T
	ctx  context.Context
	conn *bokbok.Conn
	sess *Session // the node's session for this connection

	mu   sync.Mutex // guards got and ops
	got  []rawOp
	ops  map[string]int // how many of each operation arrived
	more chan struct{}  // capacity 1: got grew
}

func newTCPPeer(t *testing.T, ctx context.Context, n *Node, stall bool) *tcpPeer {
	t.Helper()
	p := &tcpPeer{t: t, ctx: ctx, more: make(chan struct{}, 1), ops: map[string]int{}}
	unstall := make(chan struct{})
	h := bokbok.HandlerFunc(func(_ context.Context, req *bokbok.Request) (any, error) {
		if op, ok := parseRawOp(req.Raw()); ok && req.IsNotification() {
			p.mu.Lock()
			p.got = append(p.got, op)
			p.ops[op.op]++
			p.mu.Unlock()
			select {
			case p.more <- struct{}{}:
			default:
			}
		}
		return nil, nil
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	ch := make(chan *Session, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			t.Errorf("Accept: %v", err)
			ch <- nil
			return
		}
		s, err := n.NewSession(ctx, nc, nil)
		if err != nil {
			t.Errorf("NewSession: %v", err)
		}
		ch <- s
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	sc := &stallConn{Conn: nc, unstall: unstall}
	conn, err := bokbok.NewConn(ctx, sc, &bokbok.Config{Handler: h})
	require.NoError(t, err)
	sc.stalled.Store(stall)
	p.conn = conn
	p.sess = <-ch
	require.NotNil(t, p.sess)
	t.Cleanup(func() {
		close(unstall)
		conn.Close()
		p.sess.Close()
	})
	return p
}

// stallConn is a connection whose reads block, once stalled is set,
// until unstall is closed.
type stallConn struct {
	net.Conn
	stalled atomic.Bool
	unstall chan struct{}
}

func (c *stallConn) Read(b []byte) (int, error) {
	if c.stalled.Load() {
		<-c.unstall
		return 0, net.ErrClosed
	}
	return c.Conn.Read(b)
}

// send writes a capability message made of fields; it reports whether
// the connection took it (a session the node aborted takes no more).
func (p *tcpPeer) send(fields ...any) bool {
	p.t.Helper()
	b, err := msgpack.Marshal(fields)
	require.NoError(p.t, err)
	return p.sendRaw(b)
}

func (p *tcpPeer) sendRaw(b []byte) bool {
	return p.conn.Notify(p.ctx, msgpack.RawMessage(b)) == nil
}

// waitFor returns the first message from the node, not returned before,
// that match accepts, waiting up to 20 s. Only the test's goroutine calls
// it.
func (p *tcpPeer) waitFor(what string, match func(rawOp) bool) rawOp {
	p.t.Helper()
	deadline := time.After(20 * time.Second)
	from := 0
	for {
		p.mu.Lock()
		got := p.got
		p.mu.Unlock()
		for ; from < len(got); from++ {
			if got[from].op != "seen" && match(got[from]) {
				op := got[from]
				p.mu.Lock()
				p.got[from] = rawOp{op: "seen"}
				p.mu.Unlock()
				return op
			}
		}
		select {
		case <-p.more:
		case <-deadline:
			p.t.Fatalf("no %s from the node", what)
		}
	}
}

// count returns how many messages of operation op the node sent.
func (p *tcpPeer) count(op string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ops[op]
}

// isOp matches messages of operation op whose first field is q.
func isOp(t *testing.T, op string, q uint64) func(rawOp) bool {
	return func(o rawOp) bool {
		if o.op != op || len(o.fields) == 0 {
			return false
		}
		var got uint64
		return msgpack.Unmarshal(o.fields[0], &got) == nil && got == q
	}
}

// expectBreak waits for op:break of question q and requires its code.
func (p *tcpPeer) expectBreak(q uint64, code string) {
	p.t.Helper()
	op := p.waitFor("op:break", isOp(p.t, opBreak, q))
	var gotCode, msg string
	op.field(p.t, 1, &gotCode)
	op.field(p.t, 2, &msg)
	require.Equal(p.t, code, gotCode, "message: %s", msg)
}

// fetch asks the bootstrap object for name as question q and returns the
// export id the node answers.
func (p *tcpPeer) fetch(q uint64, name string) uint64 {
	p.t.Helper()
	require.True(p.t, p.send(opDeliver, []any{descYourExport, 0}, "fetch", []any{name}, []any{}, q))
	op := p.waitFor("op:return", isOp(p.t, opReturn, q))
	var refs [][2]uint64
	op.field(p.t, 2, &refs)
	require.Len(p.t, refs, 1)
	return refs[0][1]
}

// requireAborted waits until the node's session has ended with a
// *ProtocolError whose reason contains want.
func (p *tcpPeer) requireAborted(want string) {
	p.t.Helper()
	select {
	case <-p.sess.Done():
	case <-time.After(20 * time.Second):
		p.t.Fatalf("the session did not end; stats %+v", p.sess.Stats())
	}
	var perr *ProtocolError
	require.ErrorAs(p.t, p.sess.Err(), &perr)
	require.Contains(p.t, perr.Reason, want)
	require.Equal(p.t, Stats{}, p.sess.Stats())
}

// refValue is a value that is exactly reference index 0.
var refValue = msgpack.RawMessage{0xd6, byte(refExtID), 0, 0, 0, 0}

// relayActor answers with a promise for a message to a reference it is given:
// a peer that passes it one of its own objects decides how the answer
// resolves.
type relayActor struct{}

func (relayActor) Relay(r Ref) *Promise { return r.Send("get") }

// hoard keeps every reference it is given.
type hoard struct{ refs []Ref }

func (h *hoard) Keep(rs []Ref) int { h.refs = append(h.refs, rs...); return len(h.refs) }

// hostileFixture is a node under attack, with a well-behaved peer whose
// service is checked.
type hostileFixture struct {
	t      *testing.T
	ctx    context.Context
	node   *Node
	friend *Session
}

// newHostileFixture starts a node with echo, relay and hoard actors, and
// a friendly session to it. Goroutines must be back to what they were
// when the test ends.
func newHostileFixture(t *testing.T, node *Node) *hostileFixture {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) }) // runs last
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	v := newTestVat(t, "node")
	node.Bind("echo", v.Spawn(echo{}))
	node.Bind("relay", v.Spawn(relayActor{}))
	node.Bind("hoard", v.Spawn(&hoard{}))
	var friend Node
	fs, _ := pipeNodes(t, ctx, &friend, node)
	return &hostileFixture{t: t, ctx: ctx, node: node, friend: fs}
}

// healthy requires the friendly peer to be served.
func (f *hostileFixture) healthy() {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, 20*time.Second)
	defer cancel()
	r, err := f.friend.Fetch("echo").Await(ctx)
	require.NoError(f.t, err, "the well-behaved peer is served")
	ref, err := r.Ref()
	require.NoError(f.t, err)
	require.Equal(f.t, "pong", awaitValue[string](f.t, ctx, ref.Send("ping")))
}

// heapInuse returns the heap in use after a garbage collection.
func heapInuse() uint64 { return testutil.LiveHeap() }

// requireHeapBounded requires the heap in use to have grown by less than
// limit bytes since before.
func requireHeapBounded(t *testing.T, before uint64, limit uint64) {
	t.Helper()
	after := heapInuse()
	if after > before {
		require.Less(t, after-before, limit, "heap in use grew from %d to %d bytes", before, after)
	}
}

// descList encodes n descriptors [1, first+i] (the sender's exports) as a
// msgpack array, without building them as Go values.
func descList(n int, first uint32) []byte {
	b := make([]byte, 0, 5+7*n)
	b = append(b, 0xdd)
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	for i := 0; i < n; i++ {
		b = append(b, 0x92, descMyExport, 0xce)
		b = binary.BigEndian.AppendUint32(b, first+uint32(i))
	}
	return b
}
