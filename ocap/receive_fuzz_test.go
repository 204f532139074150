package ocap

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/vmihailenco/msgpack/v5"
)

// FuzzSessionReceive feeds arbitrary bytes to a node as the whole message
// of a notification from its peer, through the path Node.ServeBokbok
// takes: whatever they are, the node either handles them or ends the
// session with a *ProtocolError, never panics or hangs, and goes on
// answering (each input is followed by a fetch that must be answered, on
// the same session if it is still open).
//
// The node, its vat and the connection are made once per process (the
// connection again whenever an input ended the session, and every 256
// inputs), so an input costs a few messages, not a connection.
func FuzzSessionReceive(f *testing.F) {
	for _, ex := range capExamples {
		f.Add(ex.bytes(&testing.T{}))
	}
	f.Add(newOp(opDeliver, 5).desc(desc{descYourExport, 1}).str("drive").raw([]byte{0x91, 0xd6, 0x62, 0, 0, 0, 7}).descs(nil).nil().bytes())
	f.Add(newOp(opDeliver, 5).desc(desc{descYourExport, 1}).str("drive").raw([]byte{0x90}).descs([]desc{{descMyExport, 3}, {descYourExport, 1}, {descYourAnswer, 1}}).uint(2).bytes())
	f.Add(newOp(opDeliver, 5).desc(desc{descYourAnswer, 1}).str("drive").raw([]byte{0x90}).descs(nil).uint(3).bytes())
	f.Add(newOp(opReturn, 3).uint(1).raw([]byte{0xd6, 0x62, 0, 0, 0, 0}).descs([]desc{{descYourAnswer, 1}}).bytes())
	f.Add(newOp(opRelease, 2).uint(1).uint(1).bytes())
	f.Add(newOp(opFinish, 1).uint(9).bytes())
	f.Add(newOp(opAbort, 1).str("bye").bytes())
	f.Add(newOp(opDeliver, 5).desc(desc{descYourExport, 1}).str("drive").raw([]byte{0x90}).descs(nil).uint(0).bytes())
	f.Add(newOp(opDeliver, 5).desc(desc{descYourExport, 1}).str("drive").raw([]byte{0x90}).descs(nil).uint(1<<64 - 1).bytes())
	f.Add(newOp(opDeliver, 5).desc(desc{descYourExport, 0}).str("fetch").raw([]byte{0x91, 0xc7, 4, 0x62, 0, 0, 0, 0}).descs([]desc{{descMyExport, 4}}).uint(5).bytes())
	f.Add(newOp(opReturn, 3).uint(1).raw([]byte{0xd6, 0x62, 0, 0, 0, 1}).descs([]desc{{descMyExport, 4}}).bytes())
	f.Add([]byte{0x91, 0xa3, 'o', 'p', ':'})
	f.Add([]byte{0x96, 0xaa, 'o', 'p', ':', 'd', 'e', 'l', 'i', 'v', 'e', 'r', 0x92, 0x02, 0x00, 0xa5, 'f', 'e', 't', 'c', 'h', 0xc7, 0x01, 0x01, 0xdf})

	fx := newReceiveFixture(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		fx.input(t, msg)
	})
}

// receiveFixture is a node serving a car, and a hand-driven peer of it.
type receiveFixture struct {
	node   *Node
	inputs int

	// The current connection.
	peer    *bokbok.Conn
	sess    *Session // the node's
	replies chan rawOp
}

func newReceiveFixture(f *testing.F) *receiveFixture {
	vat := NewVat("fuzz")
	fx := &receiveFixture{node: &Node{}}
	fx.node.Bind("car", vat.Spawn(&car{"Fuzz", "grey"}))
	f.Cleanup(func() {
		fx.disconnect()
		vat.Close()
		<-vat.Done()
	})
	return fx
}

// connect starts a fresh connection and makes export 1 the car.
func (fx *receiveFixture) connect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fx.replies = make(chan rawOp, 4096)
	replies := fx.replies
	h := bokbok.HandlerFunc(func(_ context.Context, req *bokbok.Request) (any, error) {
		if op, ok := parseRawOp(req.Raw()); ok {
			select {
			case replies <- op:
			default: // nobody is waiting for it
			}
		}
		return nil, nil
	})
	ca, cb := net.Pipe()
	ch := make(chan *Session, 1)
	go func() {
		s, err := fx.node.NewSession(ctx, cb, nil)
		if err != nil {
			t.Errorf("NewSession: %v", err)
		}
		ch <- s
	}()
	conn, err := bokbok.NewConn(ctx, ca, &bokbok.Config{Handler: h})
	if err != nil {
		t.Fatalf("NewConn: %v", err)
	}
	fx.peer, fx.sess = conn, <-ch
	if fx.sess == nil {
		t.Fatal("no session")
	}
	fx.serve(newOp(opDeliver, 5).desc(desc{descYourExport, 0}).str("fetch").raw([]byte{0x91, 0xa3, 'c', 'a', 'r'}).descs(nil).uint(1).bytes())
	fx.await(t, 1)
}

func (fx *receiveFixture) disconnect() {
	if fx.peer != nil {
		fx.peer.Close()
		fx.sess.Close()
		fx.peer, fx.sess = nil, nil
	}
}

// serve hands msg to the node as a notification on the session's
// connection.
func (fx *receiveFixture) serve(msg []byte) {
	_, _ = fx.node.serveCap(fx.sess.Conn(), msg, true)
}

// await waits for the node's op:return or op:break of question q.
func (fx *receiveFixture) await(t *testing.T, q uint64) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case op := <-fx.replies:
			if op.op != opReturn && op.op != opBreak || len(op.fields) == 0 {
				continue
			}
			var got uint64
			if msgpack.Unmarshal(op.fields[0], &got) == nil && got == q {
				return
			}
		case <-fx.sess.Done():
			return // the input ended the session after all
		case <-timeout:
			t.Fatalf("the node did not answer question %d; session %+v, err %v", q, fx.sess.Stats(), fx.sess.Err())
		}
	}
}

func (fx *receiveFixture) input(t *testing.T, msg []byte) {
	fx.inputs++
	if fx.sess == nil || fx.inputs%256 == 0 {
		fx.disconnect()
		fx.connect(t)
	}
	fx.serve(msg)
	select {
	case <-fx.sess.Done():
		var pe *ProtocolError
		if err := fx.sess.Err(); !errors.As(err, &pe) && !errors.Is(err, ErrDisconnected) {
			t.Fatalf("the session ended with %v, want a *ProtocolError", err)
		}
		fx.disconnect()
		fx.connect(t) // the node serves a new session
		return
	default:
	}
	// The session goes on: a fetch is answered. Question ids increase,
	// so the probe's is the next after the greatest the peer has used
	// (the input's, perhaps); an input that used 2^64-1 leaves none.
	fx.sess.mu.Lock()
	q := fx.sess.lastQ + 1
	fx.sess.mu.Unlock()
	if q == 0 {
		fx.disconnect()
		return
	}
	fx.serve(newOp(opDeliver, 5).desc(desc{descYourExport, 0}).str("fetch").raw([]byte{0x91, 0xa3, 'c', 'a', 'r'}).descs(nil).uint(q).bytes())
	fx.await(t, q)
	fx.serve(newOp(opFinish, 1).uint(q).bytes())
}
