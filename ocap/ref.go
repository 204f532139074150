package ocap

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// target is anything a message can be sent to: a local actor, an import, a
// promise, a peer's bootstrap object. deliver never blocks (it hands the
// message to a queue) and never fails silently: a message it cannot deliver
// breaks the message's answer. What the delivery sets off (settlements,
// messages moving on) goes into w rather than onto the stack.
type target interface {
	deliver(m *message, w *flow)
}

// message is one send: a method, its encoded arguments, and the promise its
// answer settles (nil for SendOnly).
type message struct {
	method string
	args   payload
	answer *promiseState
	hops   int // promises it passed from one to the next, see forward

	// session, for a peer's message delivered straight to an actor: the
	// session whose count of messages waiting in vats it is in, until it
	// leaves the vat's queue (leftQueue).
	session *Session
}

// leftQueue is called once when m leaves a vat's queue, run or failed.
func (m *message) leftQueue() {
	if m.session != nil {
		m.session.inVats.Add(-1)
		m.session = nil
	}
}

// newMessage encodes args as an array.
func newMessage(method string, args []any, answer *promiseState) (*message, error) {
	if args == nil {
		args = []any{}
	}
	p, err := encodePayload(args)
	if err != nil {
		return nil, fmt.Errorf("ocap: encoding the arguments of %q: %w", method, err)
	}
	return &message{method: method, args: p, answer: answer}, nil
}

// fail breaks the message's answer, if it has one.
func (m *message) fail(err error, w *flow) {
	if m.answer != nil {
		m.answer.settle(payload{}, err, w)
	}
}

// Ref is a reference to an actor, local or remote, or to a promise. Refs can
// be copied freely and compared with ==; the zero Ref refers to nothing.
// A Ref can be an argument or result of any message, at any depth (in
// slices, maps and struct fields): it travels as a reference, and the
// receiver gets a Ref through which it can send to the same actor.
type Ref struct{ t target }

// Send sends a message to the actor and returns a promise for its answer
// (Goblins' <-). It never blocks: the message is queued for the actor's
// vat or for the connection. Arguments are encoded at once with msgpack, so
// later changes to them are not seen by the actor; an argument that cannot
// be encoded gives a promise that is already broken.
func (r Ref) Send(method string, args ...any) *Promise {
	p := newPromise()
	m, err := newMessage(method, args, p.st)
	switch {
	case err != nil:
		settleNow(p.st, payload{}, err)
	case r.t == nil:
		settleNow(p.st, payload{}, ErrNilRef)
	default:
		deliverNow(r.t, m)
	}
	return p
}

// SendOnly sends a message and expects no answer (Goblins' <-np). It
// reports only failures it can see at once: an argument that cannot be
// encoded, or a nil Ref. Failures on the way or in the actor are not
// reported.
func (r Ref) SendOnly(method string, args ...any) error {
	if r.t == nil {
		return ErrNilRef
	}
	m, err := newMessage(method, args, nil)
	if err != nil {
		return err
	}
	deliverNow(r.t, m)
	return nil
}

// Release tells the exporter that this program no longer needs the
// reference, so it can drop its entry; later sends through the reference
// (through any copy of it) fail with ErrReleased. Releasing is optional:
// the garbage collector releases unreachable imports too. Release does
// nothing for references to local actors and promises.
func (r Ref) Release() {
	if ir, ok := r.t.(*importRef); ok {
		ir.release()
	}
}

// Session returns the session r's messages leave through: the one it was
// imported over, or, for a promise, the one its answer will come back on
// once its message has left. It is nil for local actors and promises.
// Session().Done() tells when the reference stops working.
func (r Ref) Session() *Session {
	switch t := r.t.(type) {
	case *importRef:
		return t.s
	case *Promise:
		if ra := t.st.remote.Load(); ra != nil {
			return ra.s
		}
	}
	return nil
}

// IsZero reports whether r is the zero Ref.
func (r Ref) IsZero() bool { return r.t == nil }

// IsLocal reports whether r refers to an actor in this process.
func (r Ref) IsLocal() bool {
	_, ok := r.t.(*actorCell)
	return ok
}

// String describes the reference for logs: what it refers to, never a
// secret.
func (r Ref) String() string {
	switch t := r.t.(type) {
	case nil:
		return "ocap.Ref(nil)"
	case *actorCell:
		return fmt.Sprintf("ocap.Ref(actor %s in vat %q)", t.kind, t.vat.name)
	case *importRef:
		return fmt.Sprintf("ocap.Ref(import %d from %s)", t.id, t.s.conn.RemoteAddr())
	case *Promise:
		return "ocap.Ref(promise)"
	}
	return "ocap.Ref"
}

// EncodeMsgpack encodes the reference for a capability message. Encoding a
// Ref anywhere else fails.
func (r Ref) EncodeMsgpack(enc *msgpack.Encoder) error { return encodeRef(enc, r) }
