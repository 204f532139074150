package ocap

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

// wireEvent is one capability message seen on a connection.
type wireEvent struct {
	out    bool   // written by this side (else read)
	op     string // "op:deliver", ...
	method string // for op:deliver
}

func (e wireEvent) String() string {
	dir := "read"
	if e.out {
		dir = "wrote"
	}
	if e.method != "" {
		return fmt.Sprintf("%s %s %q", dir, e.op, e.method)
	}
	return dir + " " + e.op
}

// wireLog is the ordered list of capability messages one side of a
// connection wrote and read, parsed from the bytes on the wire. A message
// counts as written when the Write carrying its last byte has returned
// (on a net.Pipe: when the peer has read it), and as read when the Read
// returning its last byte has returned.
type wireLog struct {
	mu     sync.Mutex
	events []wireEvent
	seen   func(wireEvent) // called for every event, under mu
}

func (l *wireLog) add(e wireEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
	if l.seen != nil {
		l.seen(e)
	}
}

// Events returns a copy of the log.
func (l *wireLog) Events() []wireEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]wireEvent(nil), l.events...)
}

// recordingConn records the capability messages that cross a net.Conn.
type recordingConn struct {
	net.Conn
	log     *wireLog
	in, out frameParser
}

func newRecordingConn(c net.Conn, log *wireLog) *recordingConn {
	return &recordingConn{Conn: c, log: log}
}

func (c *recordingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	for _, e := range c.out.feed(b[:n]) {
		e.out = true
		c.log.add(e)
	}
	return n, err
}

func (c *recordingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	for _, e := range c.in.feed(b[:n]) {
		c.log.add(e)
	}
	return n, err
}

// frameParser follows one direction of an insecure bokbok stream
// (PROTOCOL.md §2, §3, §5): the 8-byte preamble, then frames; it
// reassembles NOTIFY messages and reports the capability messages.
type frameParser struct {
	buf       []byte
	preamble  bool
	assembled map[uint32]*notifyBody
}

type notifyBody struct {
	want int
	data []byte
}

const kindNotify = 0x05

func (p *frameParser) feed(b []byte) []wireEvent {
	p.buf = append(p.buf, b...)
	if !p.preamble {
		if len(p.buf) < 8 {
			return nil
		}
		p.buf, p.preamble = p.buf[8:], true
	}
	var out []wireEvent
	for len(p.buf) >= 8 {
		kind := p.buf[0]
		length := int(binary.BigEndian.Uint16(p.buf[2:4]))
		id := binary.BigEndian.Uint32(p.buf[4:8])
		if len(p.buf) < 8+length {
			break
		}
		payload := p.buf[8 : 8+length]
		p.buf = p.buf[8+length:]
		if kind != kindNotify {
			continue
		}
		if p.assembled == nil {
			p.assembled = map[uint32]*notifyBody{}
		}
		m := p.assembled[id]
		if m == nil {
			m = &notifyBody{want: int(binary.BigEndian.Uint32(payload[:4]))}
			payload = payload[4:]
			p.assembled[id] = m
		}
		m.data = append(m.data, payload...)
		if len(m.data) >= m.want {
			delete(p.assembled, id)
			if e, ok := parseCapEvent(m.data); ok {
				out = append(out, e)
			}
		}
	}
	return out
}

// parseCapEvent reads the operation (and, for op:deliver, the method) of a
// capability message.
func parseCapEvent(body []byte) (wireEvent, bool) {
	dec := msgpack.NewDecoder(bytes.NewReader(body))
	if _, err := dec.DecodeArrayLen(); err != nil {
		return wireEvent{}, false
	}
	op, err := dec.DecodeString()
	if err != nil {
		return wireEvent{}, false
	}
	e := wireEvent{op: op}
	if op == opDeliver {
		if dec.Skip() == nil { // the target descriptor
			e.method, _ = dec.DecodeString()
		}
	}
	return e, true
}

// slowFactory makes cars only once its gate is open.
type slowFactory struct{ gate <-chan struct{} }

func (f slowFactory) MakeCar(ctx context.Context, name, color string) (Ref, error) {
	select {
	case <-f.gate:
	case <-time.After(10 * time.Second):
		return Ref{}, fmt.Errorf("the pipelined message never arrived")
	}
	return Spawn(ctx, &car{name, color})
}

// TestPipeliningOnTheWire is the seeds' car factory: the message to the
// car is sent to the promise for it, before the factory has answered. On
// the wire, the client writes op:deliver "make-car" and op:deliver
// "drive" before it reads the first op:return. To make that certain rather
// than likely, the factory does not answer until the server has read the
// pipelined op:deliver "drive" from its connection.
func TestPipeliningOnTheWire(t *testing.T) {
	ctx := testCtx(t)
	vat := newTestVat(t, "server")
	var clientLog, serverLog wireLog
	pipelined := make(chan struct{})
	var once sync.Once
	serverLog.seen = func(e wireEvent) {
		if !e.out && e.op == opDeliver && e.method == "drive" {
			once.Do(func() { close(pipelined) })
		}
	}
	var client, server Node
	server.Bind("factory", vat.Spawn(slowFactory{gate: pipelined}))
	ca, cb := net.Pipe()
	cs, _ := connectConns(t, ctx, &client, &server, newRecordingConn(ca, &clientLog), newRecordingConn(cb, &serverLog))

	factory := awaitRef(t, ctx, cs.Fetch("factory"))
	start := len(clientLog.Events())

	carP := factory.Send("make-car", "Explorist", "blue")
	noise := carP.Send("drive")
	require.Equal(t, "The blue Explorist goes vroom!", awaitValue[string](t, ctx, noise))

	var got []string
	for _, e := range clientLog.Events()[start:] {
		if e.op == opDeliver || e.op == opReturn || e.op == opBreak {
			got = append(got, e.String()) // not op:finish or op:release, which the GC sends when it likes
		}
	}
	require.GreaterOrEqual(t, len(got), 4, "%q", got)
	require.Equal(t, []string{
		`wrote op:deliver "make-car"`,
		`wrote op:deliver "drive"`,
		`read op:return`, // the car
		`read op:return`, // its noise
	}, got[:4], "one round trip: both messages leave before the first answer arrives")
}

// TestCheckRefs: every extension 98 in a value must be a fixext 4 whose
// index is below the number of references the message carries
// (PROTOCOL.md §19.3); nothing else is a reference.
func TestCheckRefs(t *testing.T) {
	ref := func(i byte) []byte { return []byte{0xd6, 0x62, 0, 0, 0, i} }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	long := func(head []byte, n int, item []byte) []byte { // a container of n items
		return append(head, bytes.Repeat(item, n)...)
	}
	for _, c := range []struct {
		name string
		b    []byte
		n    int
		err  string // "" if good
	}{
		{"nil", []byte{0xc0}, 0, ""},
		{"one reference", ref(0), 1, ""},
		{"index 0 of none", ref(0), 0, "reference index 0, but the message carries 0 references"},
		{"last index", ref(2), 3, ""},
		{"index beyond", ref(3), 3, "reference index 3, but the message carries 3 references"},
		{"largest index", []byte{0xd6, 0x62, 0xff, 0xff, 0xff, 0xff}, 3, "reference index 4294967295"},
		{"nested", cat([]byte{0x92, 0x81, 0xa1, 'k', 0x91}, ref(1), ref(0)), 2, ""},
		{"nested beyond", cat([]byte{0x92, 0x81, 0xa1, 'k', 0x91}, ref(2), ref(0)), 2, "reference index 2"},
		{"map key", cat([]byte{0x81}, ref(0), []byte{0xc0}), 1, ""},
		{"array 16", long([]byte{0xdc, 0, 3}, 3, ref(0)), 1, ""},
		{"array 32", long([]byte{0xdd, 0, 0, 0, 2}, 2, ref(1)), 1, "reference index 1"},
		{"map 16", long([]byte{0xde, 0, 1}, 2, ref(0)), 1, ""},
		{"map 32", long([]byte{0xdf, 0, 0, 0, 1}, 2, ref(4)), 1, "reference index 4"},
		{"fixext 1", []byte{0xd4, 0x62, 0}, 1, "a reference of 1 bytes, want fixext 4"},
		{"fixext 2", []byte{0xd5, 0x62, 0, 0}, 1, "a reference of 2 bytes"},
		{"fixext 8", []byte{0xd7, 0x62, 0, 0, 0, 0, 0, 0, 0, 0}, 1, "a reference of 8 bytes"},
		{"fixext 16", cat([]byte{0xd8, 0x62}, make([]byte, 16)), 1, "a reference of 16 bytes"},
		{"ext 8 of 4 bytes", []byte{0xc7, 4, 0x62, 0, 0, 0, 0}, 1, "a reference in an ext 8 of 4 bytes, want fixext 4"},
		{"ext 16", []byte{0xc8, 0, 4, 0x62, 0, 0, 0, 0}, 1, "a reference in an ext 16"},
		{"ext 32", []byte{0xc9, 0, 0, 0, 4, 0x62, 0, 0, 0, 0}, 1, "a reference in an ext 32"},
		{"other extensions", []byte{0x93, 0xd6, 0x05, 0, 0, 0, 9, 0xc7, 1, 0x63, 0, 0xd7, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}, 0, ""},
		{"inside another extension", []byte{0xc7, 6, 0x05, 0xd6, 0x62, 0, 0, 0, 9}, 0, ""},
		{"inside a string", []byte{0xa6, 0xd6, 0x62, 0, 0, 0, 9}, 0, ""},
		{"inside str 8, bin 16, str 32", []byte{0x93, 0xd9, 1, 0xd6, 0xc5, 0, 1, 0xd6, 0xdb, 0, 0, 0, 1, 0xd6}, 0, ""},
		{"numbers", []byte{0x9b, 0x7f, 0xe0, 0xcc, 1, 0xcd, 0, 1, 0xce, 0, 0, 0, 1, 0xcf, 0, 0, 0, 0, 0, 0, 0, 1,
			0xd0, 1, 0xd1, 0, 1, 0xd2, 0, 0, 0, 1, 0xd3, 0, 0, 0, 0, 0, 0, 0, 1, 0xca, 0, 0, 0, 0}, 0, ""},
		{"floats and booleans", []byte{0x93, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0xc2, 0xc3}, 0, ""},
		{"truncated reference", []byte{0xd6, 0x62, 0, 0}, 1, "truncated"},
		{"truncated array", []byte{0x92, 0xc0}, 0, "truncated"},
		{"truncated string", []byte{0xd9, 5, 'a'}, 0, "truncated"},
		{"truncated length", []byte{0xdd, 0, 0}, 0, "truncated"},
		{"huge count", []byte{0xdf, 0xff, 0xff, 0xff, 0xff}, 0, "truncated"},
		{"empty", nil, 0, "truncated"},
		{"trailing bytes", []byte{0xc0, 0xc0}, 0, "1 bytes after the value"},
		{"not msgpack", []byte{0xc1}, 0, "0xc1 is not a msgpack type"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := checkRefs(c.b, c.n)
			if c.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, c.err)
		})
	}
	// The arguments and results a program sends are checked too: raw
	// msgpack cannot smuggle in a reference that no Ref made.
	_, err := encodePayload([]any{msgpack.RawMessage(ref(0))})
	require.ErrorContains(t, err, "reference index 0, but the message carries 0 references")
	p, err := encodePayload([]any{Ref{t: &actorCell{}}, msgpack.RawMessage(ref(0))})
	require.NoError(t, err, "index 0 is the Ref's")
	require.Len(t, p.refs, 1)
	_, err = encodePayload(msgpack.RawMessage{0xc7, 4, 0x62, 0, 0, 0, 0})
	require.ErrorContains(t, err, "want fixext 4")
	two := cat([]byte{0x92}, ref(0), ref(1))
	require.Zero(t, testing.AllocsPerRun(100, func() { _ = checkRefs(two, 2) }), "checking allocates nothing")
}

// asker sends "get" to the reference it is given, passing that reference
// along, and answers a list: the promise for that message's answer, the
// reference, and a promise of its own.
type asker struct{ own *Promise }

func (a *asker) Ask(r Ref) []any {
	if a.own == nil {
		a.own, _ = NewPromise()
	}
	return []any{r.Send("get", r), r, a.own}
}

// TestDescriptorKinds: one rule names every reference a message carries,
// in op:deliver and op:return alike (PROTOCOL.md §19.3): the sender's own
// objects and promises are kind 1 (the same export id each time), the
// receiver's own exports kind 2, and promises for the receiver's answers
// kind 3.
func TestDescriptorKinds(t *testing.T) {
	ctx := testCtx(t)
	v := newTestVat(t, "node")
	var node Node
	node.Bind("asker", v.Spawn(&asker{}))
	node.Bind("echo", v.Spawn(echo{}))
	p := newRawPeer(t, ctx, &node)
	askID := p.fetch(1, "asker") // kind 1: the node's own actor
	echoID := p.fetch(2, "echo")

	type descs = [][2]uint64
	p.send(opDeliver, []any{descYourExport, askID}, "ask", refArg(0), []any{[]any{descMyExport, 5}}, 3)
	// The asker's message to the peer's export 5, carrying export 5 back:
	// kind 2 in the refs, as in the target.
	op := p.next()
	require.Equal(t, opDeliver, op.op, "%+v", op)
	var to [2]uint64
	var refs descs
	var q uint64
	op.field(t, 0, &to)
	op.field(t, 3, &refs)
	op.field(t, 4, &q)
	require.Equal(t, [2]uint64{descYourExport, 5}, to)
	require.Equal(t, descs{{descYourExport, 5}}, refs)
	require.EqualValues(t, 1, q, "the node's first question")
	// The answer: the promise for the peer's answer to question 1 (kind
	// 3), export 5 again (kind 2), and the asker's own promise (kind 1).
	refs = p.expectReturn(3)
	require.Len(t, refs, 3)
	require.Equal(t, [2]uint64{descYourAnswer, q}, refs[0])
	require.Equal(t, [2]uint64{descYourExport, 5}, refs[1])
	require.EqualValues(t, descMyExport, refs[2][0])
	own := refs[2][1]
	require.NotContains(t, []uint64{0, askID, echoID}, own, "a fresh export")

	// The node's objects handed back to it come back as its own exports,
	// under the same ids, whether it was sent them as kind 2 or kind 3.
	p.send(opDeliver, []any{descYourExport, echoID}, "echo-ref", refArg(0), []any{[]any{descYourExport, askID}}, 4)
	require.Equal(t, descs{{descMyExport, askID}}, p.expectReturn(4))
	p.send(opDeliver, []any{descYourExport, askID}, "ask", refArg(0), []any{[]any{descYourExport, echoID}}, 5)
	refs = p.expectReturn(5) // the asker's message went to the node's own echo: no op:deliver
	require.Len(t, refs, 3)
	require.EqualValues(t, descMyExport, refs[0][0], "a promise of the node's own")
	require.Equal(t, [2]uint64{descMyExport, echoID}, refs[1])
	require.Equal(t, [2]uint64{descMyExport, own}, refs[2], "the same export id every time")
	require.NoError(t, p.sess.Err())
}
