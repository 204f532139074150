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
