package bokbok

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Raw-wire protocol tests: a hand-driven "raw peer" writes bytes to a real
// Conn and reads what the Conn sends back, so each way of breaking the
// protocol can be checked to end the connection with the right typed error.
//
// The helpers here are prefixed "rob" (robustness) to stay clear of the
// other test files' helpers.

// robFrame is one frame as the raw peer received it.
type robFrame struct {
	kind    frameKind
	flags   uint8
	id      uint32
	payload []byte
}

// robPeer is the far end of a connection, driven by hand. A goroutine reads
// what the Conn sends: first the 8-byte preamble, then frames.
type robPeer struct {
	nc       net.Conn
	preamble chan []byte   // capacity 1: the Conn's preamble
	frames   chan robFrame // the Conn's frames, in order
	stop     chan struct{}
	done     chan struct{} // closed when the reading goroutine has ended
	stopOnce sync.Once
	readErr  error // why reading ended; set before done closes
}

func startRobPeer(nc net.Conn) *robPeer {
	rp := &robPeer{
		nc:       nc,
		preamble: make(chan []byte, 1),
		frames:   make(chan robFrame, 1024),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go rp.readLoop()
	return rp
}

func (rp *robPeer) readLoop() {
	defer close(rp.done)
	pre := make([]byte, preambleSize)
	if _, err := io.ReadFull(rp.nc, pre); err != nil {
		rp.readErr = err
		return
	}
	rp.preamble <- pre
	for {
		var hdr [frameHeaderSize]byte
		if _, err := io.ReadFull(rp.nc, hdr[:]); err != nil {
			rp.readErr = err
			return
		}
		f := robFrame{
			kind:    frameKind(hdr[0]),
			flags:   hdr[1],
			id:      binary.BigEndian.Uint32(hdr[4:8]),
			payload: make([]byte, binary.BigEndian.Uint16(hdr[2:4])),
		}
		if _, err := io.ReadFull(rp.nc, f.payload); err != nil {
			rp.readErr = err
			return
		}
		select {
		case rp.frames <- f:
		case <-rp.stop:
			return
		}
	}
}

// close closes the raw end and waits for the reading goroutine.
func (rp *robPeer) close() {
	rp.stopOnce.Do(func() { close(rp.stop) })
	rp.nc.Close()
	<-rp.done
}

// write writes b, ignoring the error: the Conn may rightly close its end
// before it has read everything.
func (rp *robPeer) write(b []byte) { _, _ = rp.nc.Write(b) }

// next returns the next frame the Conn sent, failing the test after 5 s.
func (rp *robPeer) next(t testing.TB) robFrame {
	t.Helper()
	select {
	case f := <-rp.frames:
		return f
	case <-rp.done:
		t.Fatalf("raw peer: connection ended while waiting for a frame: %v", rp.readErr)
	case <-time.After(5 * time.Second):
		t.Fatal("raw peer: no frame within 5 s")
	}
	return robFrame{}
}

// nextKind skips frames until one of the given kind arrives.
func (rp *robPeer) nextKind(t testing.TB, kind frameKind) robFrame {
	t.Helper()
	for {
		if f := rp.next(t); f.kind == kind {
			return f
		}
	}
}

// robSettings is what the raw peer announces unless a test says otherwise.
var robSettings = settings{MaxMessageSize: 1 << 20, NotifyWindow: 16, MaxConcurrentHandlers: 16}

// robOpening is a peer's valid opening: preamble and SETTINGS.
func robOpening(s settings) []byte {
	p := s.encode()
	b := appendPreamble(nil, modeInsecure)
	b = appendFrameHeader(b, kindSettings, 0, len(p), 0)
	return append(b, p...)
}

// robFrameBytes encodes one frame with the real header encoder.
func robFrameBytes(kind frameKind, flags uint8, id uint32, payload []byte) []byte {
	return append(appendFrameHeader(nil, kind, flags, len(payload), id), payload...)
}

// robRawHeader encodes a header without any validation (lengths above what
// appendFrameHeader can express, unknown kinds).
func robRawHeader(kind byte, flags byte, length uint16, id uint32) []byte {
	b := []byte{kind, flags, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(b[2:4], length)
	binary.BigEndian.PutUint32(b[4:8], id)
	return b
}

// robBody is a 4-byte declared length followed by body.
func robBody(declared uint32, body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, declared), body...)
}

// robMsgFrame is a whole message in one frame: declared length + body.
func robMsgFrame(kind frameKind, id uint32, body []byte) []byte {
	return robFrameBytes(kind, 0, id, robBody(uint32(len(body)), body))
}

// robRequestBody encodes a REQUEST body (timeout + message) without its
// length.
func robRequestBody(t testing.TB, msg any) []byte {
	b, err := encodeRequestBody(0, msg)
	require.NoError(t, err)
	return b[bodyLenSize:]
}

// robBlockingHandler answers "ping" at once and otherwise blocks until its
// context ends.
var robBlockingHandler = HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
	var s string
	if req.Decode(&s) == nil && s == "ping" {
		return "pong", nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
})

// robConn is a Conn opened against a raw peer over net.Pipe.
type robConn struct {
	*Conn
	rp     *robPeer
	closed chan struct{} // closed by OnClose: handlers and loops have ended
}

// robOpen opens a Conn (with cfg, nil fields defaulted for the tests)
// against a raw peer announcing peer, and checks the Conn's own opening.
func robOpen(t testing.TB, cfg *Config, peer settings) *robConn {
	t.Helper()
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = -1 // no PINGs in the raw peer's way
	}
	if c.Handler == nil {
		c.Handler = robBlockingHandler
	}
	rc := &robConn{closed: make(chan struct{})}
	userOnClose := c.OnClose
	c.OnClose = func(conn *Conn, reason error) {
		if userOnClose != nil {
			userOnClose(conn, reason)
		}
		close(rc.closed)
	}
	na, nb := net.Pipe()
	rc.rp = startRobPeer(nb)
	conn, err := robNewConn(na, nb, &c, peer)
	require.NoError(t, err)
	rc.Conn = conn
	t.Cleanup(func() {
		rc.Close()
		rc.rp.close()
		select {
		case <-rc.closed:
		case <-time.After(5 * time.Second):
			t.Error("OnClose did not run within 5 s of Close")
		}
	})

	select {
	case pre := <-rc.rp.preamble:
		require.Equal(t, appendPreamble(nil, modeInsecure), pre, "the Conn's preamble")
	case <-time.After(5 * time.Second):
		t.Fatal("no preamble from the Conn")
	}
	f := rc.rp.next(t)
	require.Equal(t, kindSettings, f.kind, "the Conn's first frame")
	require.Zero(t, f.id)
	got, err := parseSettings(f.payload)
	require.NoError(t, err)
	require.Equal(t, uint64(conn.cfg.MaxMessageSize), got.MaxMessageSize)
	require.Equal(t, uint64(conn.cfg.NotifyWindow), got.NotifyWindow)
	return rc
}

// robNewConn opens a Conn with cfg on na while a raw peer, whose own reader
// must already be running on nb, writes its opening announcing peer.
func robNewConn(na, nb net.Conn, cfg *Config, peer settings) (*Conn, error) {
	type result struct {
		c   *Conn
		err error
	}
	opened := make(chan result, 1)
	go func() {
		c, err := NewConn(context.Background(), na, cfg)
		opened <- result{c, err}
	}()
	_, werr := nb.Write(robOpening(peer))
	r := <-opened
	if r.err == nil && werr != nil {
		r.c.Close()
		r.err = werr
	}
	return r.c, r.err
}

// robWaitClosed waits (5 s at most) for the connection to close on its
// own and returns its Err.
func robWaitClosed(t testing.TB, c *Conn) error {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the connection did not close within 5 s")
	}
	return c.Err()
}

// robPending starts a Request that the raw peer receives but never answers,
// and returns its id and a channel with its eventual error.
func robPending(t testing.TB, rc *robConn) (uint32, <-chan error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := rc.Request(ctx, "pending")
		errc <- err
	}()
	f := rc.rp.nextKind(t, kindRequest)
	return f.id, errc
}

func robCallErr(t testing.TB, errc <-chan error) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("the pending call did not end within 5 s")
		return nil
	}
}

// TestWireRawPeerHappyPath checks the raw peer harness itself: hand-made
// frames that follow the protocol are served and answered, so the failure
// cases below fail for the reason they are about.
func TestWireRawPeerHappyPath(t *testing.T) {
	rc := robOpen(t, nil, robSettings)

	// The Conn's request, answered by hand.
	id, _ := robPending(t, rc)
	errc := make(chan error, 1)
	var got string
	go func() {
		errc <- rc.Call(context.Background(), "second", &got)
	}()
	f := rc.rp.nextKind(t, kindRequest)
	require.NotEqual(t, id, f.id, "ids of concurrent calls differ")
	reply, err := encodeValueBody("answer")
	require.NoError(t, err)
	rc.rp.write(robFrameBytes(kindResponse, 0, f.id, reply))
	require.NoError(t, robCallErr(t, errc))
	require.Equal(t, "answer", got)

	// A request from the raw peer, split over three frames.
	body := robRequestBody(t, "ping")
	whole := robBody(uint32(len(body)), body)
	rc.rp.write(robFrameBytes(kindRequest, 0, 77, whole[:5])) // the length and 1 byte
	rc.rp.write(robFrameBytes(kindRequest, 0, 77, whole[5:7]))
	rc.rp.write(robFrameBytes(kindRequest, 0, 77, whole[7:]))
	f = rc.rp.nextKind(t, kindResponse)
	require.Equal(t, uint32(77), f.id)
	var s string
	require.NoError(t, decodeValue(f.payload[bodyLenSize:], &s, 0))
	require.Equal(t, "pong", s)

	// PING is answered with PONG of the same id.
	rc.rp.write(robFrameBytes(kindPing, 0, 1234, nil))
	require.Equal(t, uint32(1234), rc.rp.nextKind(t, kindPong).id)

	// An ERROR answers the pending call with a *RemoteError.
	rc.rp.write(robMsgFrame(kindError, id, encodeErrorBody("app.code", "nope")[bodyLenSize:]))
	require.NoError(t, rc.Err(), "the connection stays open")
}

// TestWireRejectsBadFrames feeds a Conn frames that break the protocol after
// a valid opening. Each must close the connection with a *ProtocolError
// that says what was wrong, and fail the call pending at the time.
func TestWireRejectsBadFrames(t *testing.T) {
	okBody := func(t *testing.T) []byte { return robRequestBody(t, "hi") }
	cases := []struct {
		name string
		cfg  *Config
		// send writes the bad bytes; pending is the id of the call the
		// Conn is waiting on. It may close the raw end (to truncate).
		send    func(t *testing.T, rc *robConn, pending uint32)
		wantMsg string  // a piece of the error text
		wantIs  []error // besides ErrClosed and ErrProtocol
		// answered: send answers the pending call before breaking the
		// protocol, so the call succeeds.
		answered bool
	}{
		{
			name: "truncated frame header",
			send: func(t *testing.T, rc *robConn, _ uint32) {
				rc.rp.write(robFrameBytes(kindPing, 0, 1, nil)[:3])
				rc.rp.nc.Close()
			},
			wantMsg: "truncated frame header",
			wantIs:  []error{io.ErrUnexpectedEOF},
		},
		{
			name: "truncated payload",
			send: func(t *testing.T, rc *robConn, _ uint32) {
				rc.rp.write(robMsgFrame(kindRequest, 5, okBody(t))[:frameHeaderSize+5])
				rc.rp.nc.Close()
			},
			wantMsg: "truncated REQUEST frame",
			wantIs:  []error{io.ErrUnexpectedEOF},
		},
		{
			name: "truncated mid-message",
			send: func(t *testing.T, rc *robConn, _ uint32) {
				// A whole first frame of a two-frame message, then half of
				// the second frame.
				rc.rp.write(robFrameBytes(kindRequest, 0, 5, robBody(100, []byte{0})))
				rc.rp.write(robFrameBytes(kindRequest, 0, 5, []byte{1, 2})[:9])
				rc.rp.nc.Close()
			},
			wantMsg: "truncated REQUEST frame",
			wantIs:  []error{io.ErrUnexpectedEOF},
		},
		{
			name:    "unknown frame kind 0x0b",
			send:    func(t *testing.T, rc *robConn, _ uint32) { rc.rp.write(robRawHeader(0x0b, 0, 0, 1)) },
			wantMsg: "unknown frame kind 0x0b",
		},
		{
			name:    "unknown frame kind 0x00",
			send:    func(t *testing.T, rc *robConn, _ uint32) { rc.rp.write(robRawHeader(0x00, 0, 0, 0)) },
			wantMsg: "unknown frame kind 0x00",
		},
		{
			name:    "unknown frame kind 0xff",
			send:    func(t *testing.T, rc *robConn, _ uint32) { rc.rp.write(robRawHeader(0xff, 0xff, 0xffff, 0xffffffff)) },
			wantMsg: "frame",
		},
		{
			// Only the header is sent: the length must be refused before
			// the Conn waits for a payload it should never read.
			name: "payload longer than a frame allows",
			send: func(t *testing.T, rc *robConn, _ uint32) {
				rc.rp.write(robRawHeader(byte(kindRequest), 0, maxFramePayload+1, 9))
			},
			wantMsg: "exceeds 65528",
		},
		{
			name:    "payload of 0xffff",
			send:    func(t *testing.T, rc *robConn, _ uint32) { rc.rp.write(robRawHeader(byte(kindNotify), 0, 0xffff, 9)) },
			wantMsg: "exceeds 65528",
		},
		{
			name:    "PING with a payload",
			send:    func(t *testing.T, rc *robConn, _ uint32) { rc.rp.write(robFrameBytes(kindPing, 0, 1, []byte{0})) },
			wantMsg: "PING frame with a 1-byte payload",
		},
		{
			name:    "PONG with a payload",
			send:    func(t *testing.T, rc *robConn, _ uint32) { rc.rp.write(robFrameBytes(kindPong, 0, 1, []byte{0, 0})) },
			wantMsg: "PONG frame with a 2-byte payload",
		},
		{
			name:    "CANCEL with a payload",
			send:    func(t *testing.T, rc *robConn, _ uint32) { rc.rp.write(robFrameBytes(kindCancel, 0, 3, []byte{0})) },
			wantMsg: "CANCEL frame with a 1-byte payload",
		},
		{
			name:    "GOAWAY with a payload",
			send:    func(t *testing.T, rc *robConn, _ uint32) { rc.rp.write(robFrameBytes(kindGoAway, 0, 0, []byte("bye"))) },
			wantMsg: "GOAWAY frame with a 3-byte payload",
		},
		{
			name:    "CREDIT with a payload",
			send:    func(t *testing.T, rc *robConn, _ uint32) { rc.rp.write(robFrameBytes(kindCredit, 0, 1, []byte{1})) },
			wantMsg: "CREDIT frame with a 1-byte payload",
		},
		{
			name:    "REQUEST with id 0",
			send:    func(t *testing.T, rc *robConn, _ uint32) { rc.rp.write(robMsgFrame(kindRequest, 0, okBody(t))) },
			wantMsg: "REQUEST frame with id 0",
		},
		{
			name:    "NOTIFY with id 0",
			send:    func(t *testing.T, rc *robConn, _ uint32) { rc.rp.write(robMsgFrame(kindNotify, 0, []byte{0xc0})) },
			wantMsg: "NOTIFY frame with id 0",
		},
		{
			name:    "RESPONSE with id 0",
			send:    func(t *testing.T, rc *robConn, _ uint32) { rc.rp.write(robMsgFrame(kindResponse, 0, []byte{0xc0})) },
			wantMsg: "RESPONSE frame with id 0",
		},
		{
			name:    "CANCEL with id 0",
			send:    func(t *testing.T, rc *robConn, _ uint32) { rc.rp.write(robFrameBytes(kindCancel, 0, 0, nil)) },
			wantMsg: "CANCEL frame with id 0",
		},
		{
			name:    "empty REQUEST frame",
			send:    func(t *testing.T, rc *robConn, _ uint32) { rc.rp.write(robFrameBytes(kindRequest, 0, 4, nil)) },
			wantMsg: "empty REQUEST frame",
		},
		{
			name: "RESPONSE for an id never requested",
			send: func(t *testing.T, rc *robConn, p uint32) {
				rc.rp.write(robMsgFrame(kindResponse, p+1000, []byte{0xc0}))
			},
			wantMsg: "which has no request waiting",
		},
		{
			name: "ERROR for an id never requested",
			send: func(t *testing.T, rc *robConn, p uint32) {
				rc.rp.write(robMsgFrame(kindError, p+1000, encodeErrorBody("", "x")[4:]))
			},
			wantMsg: "which has no request waiting",
		},
		{
			name: "second RESPONSE for an answered id",
			send: func(t *testing.T, rc *robConn, p uint32) {
				rc.rp.write(robMsgFrame(kindResponse, p, []byte{0xc0}))
				rc.rp.write(robMsgFrame(kindResponse, p, []byte{0xc0}))
			},
			wantMsg:  "which has no request waiting",
			answered: true,
		},
		{
			name: "ERROR continuing a RESPONSE",
			send: func(t *testing.T, rc *robConn, p uint32) {
				rc.rp.write(robFrameBytes(kindResponse, 0, p, robBody(10, []byte{0x91})))
				rc.rp.write(robFrameBytes(kindError, 0, p, []byte{0x92}))
			},
			wantMsg: "ERROR frame continues a RESPONSE",
		},
		{
			name: "ERROR body that is not [code, message]",
			send: func(t *testing.T, rc *robConn, p uint32) {
				rc.rp.write(robMsgFrame(kindError, p, []byte{0x92, 0x01, 0x02}))
			},
			wantMsg: "ERROR body is not [code, message]",
		},
		{
			name: "declared REQUEST body above MaxMessageSize",
			cfg:  &Config{MaxMessageSize: 1 << 10},
			send: func(t *testing.T, rc *robConn, _ uint32) {
				rc.rp.write(robFrameBytes(kindRequest, 0, 5, robBody(1<<10+1, []byte{0})))
			},
			wantMsg: "REQUEST longer than this side's limit",
			wantIs:  []error{ErrMessageTooLarge},
		},
		{
			// A declared length of 2 GiB - 1, with nothing behind it, must be
			// refused at once, without waiting for (or allocating) the body.
			name: "declared REQUEST body of 0x7fffffff",
			send: func(t *testing.T, rc *robConn, _ uint32) {
				rc.rp.write(robFrameBytes(kindRequest, 0, 5, robBody(0x7fffffff, nil)))
			},
			wantMsg: "REQUEST longer than this side's limit",
			wantIs:  []error{ErrMessageTooLarge},
		},
		{
			name: "declared RESPONSE body of 0xffffffff",
			send: func(t *testing.T, rc *robConn, p uint32) {
				rc.rp.write(robFrameBytes(kindResponse, 0, p, robBody(0xffffffff, nil)))
			},
			wantMsg: "RESPONSE longer than this side's limit",
			wantIs:  []error{ErrMessageTooLarge},
		},
		{
			name: "declared body length 0",
			send: func(t *testing.T, rc *robConn, _ uint32) {
				rc.rp.write(robFrameBytes(kindNotify, 0, 5, robBody(0, nil)))
			},
			wantMsg: "NOTIFY with an empty body",
		},
		{
			name: "first frame too short for the length",
			send: func(t *testing.T, rc *robConn, _ uint32) {
				rc.rp.write(robFrameBytes(kindRequest, 0, 5, []byte{0, 0, 1}))
			},
			wantMsg: "too short for the length",
		},
		{
			name: "one frame carrying more than declared",
			send: func(t *testing.T, rc *robConn, _ uint32) {
				rc.rp.write(robFrameBytes(kindRequest, 0, 5, robBody(3, []byte{0, 0xc0, 0xc0, 0xc0})))
			},
			wantMsg: "carry more than the 3 bytes announced",
		},
		{
			name: "frames carrying more than declared",
			send: func(t *testing.T, rc *robConn, _ uint32) {
				rc.rp.write(robFrameBytes(kindNotify, 0, 5, robBody(4, []byte{0x94, 1})))
				rc.rp.write(robFrameBytes(kindNotify, 0, 5, []byte{2, 3, 4}))
			},
			wantMsg: "carry more than the 4 bytes announced",
		},
		{
			name: "NOTIFY continuing a REQUEST",
			send: func(t *testing.T, rc *robConn, _ uint32) {
				rc.rp.write(robFrameBytes(kindRequest, 0, 5, robBody(4, []byte{0})))
				rc.rp.write(robFrameBytes(kindNotify, 0, 5, []byte{0xc0}))
			},
			wantMsg: "NOTIFY frame continues a REQUEST",
		},
		{
			name: "REQUEST reusing the id of a running request",
			send: func(t *testing.T, rc *robConn, _ uint32) {
				rc.rp.write(robMsgFrame(kindRequest, 5, okBody(t))) // blocks in its handler
				rc.rp.write(robMsgFrame(kindRequest, 5, okBody(t)))
			},
			wantMsg: "which a running request still holds",
		},
		{
			name:    "REQUEST body with a timeout but no message",
			send:    func(t *testing.T, rc *robConn, _ uint32) { rc.rp.write(robMsgFrame(kindRequest, 5, []byte{0x05})) },
			wantMsg: "REQUEST body has a timeout but no message",
		},
		{
			name: "REQUEST body with a negative timeout",
			send: func(t *testing.T, rc *robConn, _ uint32) {
				rc.rp.write(robMsgFrame(kindRequest, 5, []byte{0xff, 0xc0}))
			},
			wantMsg: "REQUEST body: timeout",
		},
		{
			name: "REQUEST body with a string for a timeout",
			send: func(t *testing.T, rc *robConn, _ uint32) {
				rc.rp.write(robMsgFrame(kindRequest, 5, []byte{0xa1, 'x', 0xc0}))
			},
			wantMsg: "REQUEST body: timeout",
		},
		{
			name: "second SETTINGS",
			send: func(t *testing.T, rc *robConn, _ uint32) {
				p := robSettings.encode()
				rc.rp.write(robFrameBytes(kindSettings, 0, 0, p))
			},
			wantMsg: "SETTINGS frame after the handshake",
		},
		{
			name: "second SETTINGS with an id",
			send: func(t *testing.T, rc *robConn, _ uint32) {
				rc.rp.write(robFrameBytes(kindSettings, 0, 3, robSettings.encode()))
			},
			wantMsg: "SETTINGS frame with id 3",
		},
		{
			name: "more notifications than the notify window",
			cfg:  &Config{NotifyWindow: 2},
			send: func(t *testing.T, rc *robConn, _ uint32) {
				// The handler blocks on the first, so no credit comes back.
				for id := uint32(1); id <= 3; id++ {
					rc.rp.write(robMsgFrame(kindNotify, id, []byte{0xa1, 'x'}))
				}
			},
			wantMsg: "more than the notify window of 2",
		},
		{
			name: "incomplete notifications count against the window",
			cfg:  &Config{NotifyWindow: 2},
			send: func(t *testing.T, rc *robConn, _ uint32) {
				for id := uint32(1); id <= 3; id++ {
					rc.rp.write(robFrameBytes(kindNotify, 0, id, robBody(100, []byte{0x91})))
				}
			},
			wantMsg: "more than the notify window of 2",
		},
		{
			name:    "CREDIT of 0",
			send:    func(t *testing.T, rc *robConn, _ uint32) { rc.rp.write(robFrameBytes(kindCredit, 0, 0, nil)) },
			wantMsg: "CREDIT of 0",
		},
		{
			name:    "CREDIT beyond the window",
			send:    func(t *testing.T, rc *robConn, _ uint32) { rc.rp.write(robFrameBytes(kindCredit, 0, 1, nil)) },
			wantMsg: "would exceed the notify window of 16",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rc := robOpen(t, tc.cfg, robSettings)
			pending, callErr := robPending(t, rc)
			tc.send(t, rc, pending)

			err := robWaitClosed(t, rc.Conn)
			require.ErrorIs(t, err, ErrClosed)
			require.ErrorIs(t, err, ErrProtocol)
			var pe *ProtocolError
			require.ErrorAs(t, err, &pe)
			assert.Contains(t, err.Error(), tc.wantMsg)
			for _, want := range tc.wantIs {
				assert.ErrorIs(t, err, want)
			}

			cerr := robCallErr(t, callErr)
			if tc.answered {
				assert.NoError(t, cerr, "the call was answered before the bad frame")
			} else {
				assert.ErrorIs(t, cerr, ErrClosed, "the pending call fails")
				assert.ErrorIs(t, cerr, ErrProtocol, "the pending call's error names the cause")
			}
			_, err = rc.Request(context.Background(), "after")
			assert.ErrorIs(t, err, ErrClosed, "new calls fail")
		})
	}
}

// TestWireHugeDeclaredLengthAllocatesNothing checks that the declared body
// length is refused before any buffer is sized by it.
func TestWireHugeDeclaredLengthAllocatesNothing(t *testing.T) {
	first := robBody(0x7fffffff, []byte{0x91, 0xc0})
	var err error
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const runs = 100
	for range runs {
		var a assembly
		_, err = a.add(kindRequest, first, DefaultMaxMessageSize)
	}
	runtime.ReadMemStats(&after)
	require.ErrorIs(t, err, ErrProtocol)
	require.ErrorIs(t, err, ErrMessageTooLarge)
	perRun := (after.TotalAlloc - before.TotalAlloc) / runs
	assert.Less(t, perRun, uint64(64<<10), "bytes allocated refusing one huge declared length")

	// A length within the limit is allocated for only as far as bytes arrived.
	var a assembly
	done, err := a.add(kindRequest, robBody(DefaultMaxMessageSize, []byte{0x91}), DefaultMaxMessageSize)
	require.NoError(t, err)
	require.False(t, done)
	assert.LessOrEqual(t, cap(a.buf), 2)
}

// TestWirePartialMessagesBoundedMemory: a peer that starts many messages
// (one small frame each, announcing a large body) and never finishes them
// should not make this side hold much more memory than it sent. The
// assembly comment promises "a peer that announces a large message and
// sends little costs little".
func TestWirePartialMessagesBoundedMemory(t *testing.T) {
	for _, tc := range []struct {
		name     string
		announce uint32 // body length each message announces
		bound    int64  // how much the heap may grow
	}{
		{"larger than the reservation budget", 16 << 20, 4 << 20},
		{"within the budget: it runs out", 1 << 20, reserveBudget + 4<<20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := robOpen(t, nil, robSettings)
			const partial = 64
			var wire []byte
			for id := uint32(1); id <= partial; id++ {
				wire = append(wire, robFrameBytes(kindRequest, 0, id, robBody(tc.announce, []byte{0x91}))...)
			}
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			rc.rp.write(wire)
			// A PONG proves every earlier frame has been handled.
			rc.rp.write(robFrameBytes(kindPing, 0, 99, nil))
			require.Equal(t, uint32(99), rc.rp.nextKind(t, kindPong).id)
			runtime.GC()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			require.NoError(t, rc.Err(), "the partial messages are legal so far")
			grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			t.Logf("%d bytes on the wire made the heap grow by %d bytes", len(wire), grew)
			assert.Less(t, grew, tc.bound,
				"%d half-received requests of %d wire bytes each hold %d MiB", partial, len(wire)/partial, grew>>20)
		})
	}
}

// TestWireHandshakeRejects checks the opening exchange: a peer whose
// preamble or SETTINGS is wrong makes NewConn fail with a typed error and
// close the network connection.
func TestWireHandshakeRejects(t *testing.T) {
	pre := func(version, mode byte) []byte {
		return append([]byte("bokbok"), version, mode)
	}
	settingsFrame := func(p []byte) []byte { return robFrameBytes(kindSettings, 0, 0, p) }
	good := appendPreamble(nil, modeInsecure)
	cases := []struct {
		name      string
		cfg       *Config
		peer      []byte // written by the raw peer
		closeThen bool   // close the raw end after writing
		wantIs    []error
		wantMsg   string
	}{
		{name: "garbage instead of a preamble", peer: []byte("GET / HTTP/1.1\r\n\r\n"),
			wantIs: []error{ErrProtocol}, wantMsg: "not speaking bokbok"},
		{name: "TLS client hello", peer: []byte{0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1},
			wantIs: []error{ErrProtocol}, wantMsg: "not speaking bokbok"},
		{name: "truncated preamble", peer: []byte("bok"), closeThen: true,
			wantIs: []error{ErrProtocol, io.ErrUnexpectedEOF}, wantMsg: "truncated preamble"},
		{name: "nothing at all", closeThen: true,
			wantIs: []error{io.EOF, ErrProtocol}, wantMsg: "closed the connection before sending its preamble"},
		{name: "wrong version 2", peer: pre(2, modeInsecure),
			wantIs: []error{ErrVersion}, wantMsg: "peer speaks version 2, this side speaks version 1"},
		{name: "wrong version 0", peer: pre(0, modeInsecure),
			wantIs: []error{ErrVersion}, wantMsg: "version 0"},
		{name: "secure mode", peer: pre(protocolVersion, modeSecure),
			wantIs: []error{ErrMode}, wantMsg: "the peer wants a secure connection, this side wants an insecure one"},
		{name: "unknown mode", peer: pre(protocolVersion, 7),
			wantIs: []error{ErrMode}, wantMsg: "unknown mode 7"},
		{name: "first frame is not SETTINGS", peer: append(good, robFrameBytes(kindPing, 0, 1, nil)...),
			wantIs: []error{ErrProtocol}, wantMsg: "first frame is PING, want SETTINGS"},
		{name: "first frame is a REQUEST", peer: append(good, robFrameBytes(kindRequest, 0, 1, robBody(1, []byte{0}))...),
			wantIs: []error{ErrProtocol}, wantMsg: "first frame is REQUEST, want SETTINGS"},
		{name: "SETTINGS with an id", peer: append(good, robFrameBytes(kindSettings, 0, 1, robSettings.encode())...),
			wantIs: []error{ErrProtocol}, wantMsg: "SETTINGS frame with id 1"},
		{name: "SETTINGS not msgpack", peer: append(good, settingsFrame([]byte{0xc1})...),
			wantIs: []error{ErrProtocol}, wantMsg: "bad SETTINGS payload"},
		{name: "SETTINGS empty", peer: append(good, settingsFrame(nil)...),
			wantIs: []error{ErrProtocol}, wantMsg: "bad SETTINGS payload"},
		{name: "SETTINGS max_message_size 0",
			peer:   append(good, settingsFrame(settings{NotifyWindow: 1}.encode())...),
			wantIs: []error{ErrProtocol}, wantMsg: "max_message_size 0 out of range"},
		{name: "SETTINGS max_message_size 2^31",
			peer:   append(good, settingsFrame(settings{MaxMessageSize: 1 << 31, NotifyWindow: 1}.encode())...),
			wantIs: []error{ErrProtocol}, wantMsg: "max_message_size 2147483648 out of range"},
		{name: "SETTINGS notify_window 0",
			peer:   append(good, settingsFrame(settings{MaxMessageSize: 1}.encode())...),
			wantIs: []error{ErrProtocol}, wantMsg: "notify_window 0 out of range"},
		{name: "SETTINGS notify_window above the ceiling",
			peer:   append(good, settingsFrame(settings{MaxMessageSize: 1, NotifyWindow: maxNotifyWindow + 1}.encode())...),
			wantIs: []error{ErrProtocol}, wantMsg: "notify_window 1048577 out of range"},
		{name: "SETTINGS truncated", peer: append(good, settingsFrame(robSettings.encode())[:12]...), closeThen: true,
			wantIs: []error{ErrProtocol, io.ErrUnexpectedEOF}, wantMsg: "truncated SETTINGS frame"},
		{name: "SETTINGS header truncated", peer: append(good, 1, 0, 0), closeThen: true,
			wantIs: []error{ErrProtocol, io.ErrUnexpectedEOF}, wantMsg: "truncated frame header"},
		{name: "silent peer", cfg: &Config{HandshakeTimeout: 100 * time.Millisecond},
			wantIs: []error{ErrHandshakeTimeout}, wantMsg: "handshake timed out"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			na, nb := net.Pipe()
			rp := startRobPeer(nb)
			defer rp.close()
			opened := make(chan error, 1)
			go func() {
				c, err := NewConn(context.Background(), na, tc.cfg)
				if c != nil {
					c.Close()
				}
				opened <- err
			}()
			if len(tc.peer) > 0 {
				rp.write(tc.peer)
			}
			if tc.closeThen {
				// Wait until the Conn is in its handshake (it has sent its
				// preamble), so the close hits the read, not the setup.
				select {
				case <-rp.preamble:
				case <-time.After(5 * time.Second):
					t.Fatal("no preamble from the Conn")
				}
				nb.Close()
			}
			var err error
			select {
			case err = <-opened:
			case <-time.After(5 * time.Second):
				t.Fatal("NewConn did not return within 5 s")
			}
			require.Error(t, err)
			for _, want := range tc.wantIs {
				assert.ErrorIs(t, err, want)
			}
			assert.Contains(t, err.Error(), tc.wantMsg)
			assert.NotErrorIs(t, err, ErrClosed, "a failed handshake is not a closed connection")
			// NewConn closed its end: the raw peer's reader sees the end.
			select {
			case <-rp.done:
			case <-time.After(5 * time.Second):
				t.Fatal("NewConn did not close the network connection")
			}
		})
	}
}

// TestWirePreambleMismatchSeenByBothSides: the preamble comment promises
// that both sides send their preamble at once, so that each side of a
// mismatch can report it. A peer that sends its (wrong) preamble first
// must still receive ours. TCP loopback, as in real use: the peer's bytes
// are already waiting when the Conn starts.
func TestWirePreambleMismatchSeenByBothSides(t *testing.T) {
	cases := []struct {
		name   string
		peer   []byte
		wantIs error
	}{
		{"garbage", []byte("HELLO!\r\n"), ErrProtocol},
		{"version 2", []byte("bokbok\x02\x00"), ErrVersion},
		{"secure mode", []byte("bokbok\x01\x01"), ErrMode},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer ln.Close()
			raw, err := net.Dial("tcp", ln.Addr().String())
			require.NoError(t, err)
			defer raw.Close()
			nc, err := ln.Accept()
			require.NoError(t, err)

			_, err = raw.Write(tc.peer) // the peer speaks first
			require.NoError(t, err)
			time.Sleep(10 * time.Millisecond) // let the bytes arrive
			_, err = NewConn(context.Background(), nc, nil)
			require.ErrorIs(t, err, tc.wantIs)

			raw.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, rerr := io.ReadAll(raw)
			if rerr != nil && !errors.Is(rerr, io.ErrUnexpectedEOF) && !isConnReset(rerr) {
				require.NoError(t, rerr)
			}
			assert.True(t, bytes.HasPrefix(got, appendPreamble(nil, modeInsecure)),
				"the peer should receive our preamble so that it can report the mismatch too; it got %q (read error %v)", got, rerr)
		})
	}
}

func isConnReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

// TestWireServerSurvivesGarbageClients: clients that send garbage, before or
// after the handshake, lose their own connection only; the server keeps
// serving the others, including one opened before the garbage arrived.
func TestWireServerSurvivesGarbageClients(t *testing.T) {
	srv := &Server{Config: Config{Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		var s string
		err := req.Decode(&s)
		return "echo:" + s, err
	})}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		srv.Close()
		srv.Wait()
		assert.ErrorIs(t, <-served, ErrServerClosed)
	}()
	addr := ln.Addr().String()
	ctx := testCtx(t)

	call := func(c *Conn, s string) {
		t.Helper()
		var got string
		require.NoError(t, c.Call(ctx, s, &got))
		require.Equal(t, "echo:"+s, got)
	}
	early, err := Dial(ctx, addr, nil)
	require.NoError(t, err)
	defer early.Close()
	call(early, "before")

	garbage := []struct {
		name  string
		bytes func() []byte
	}{
		{"http", func() []byte { return []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n") }},
		{"wrong version", func() []byte { return []byte("bokbok\x09\x00") }},
		{"bad frame after the handshake", func() []byte {
			return append(robOpening(robSettings), robRawHeader(0x42, 0, 0, 0)...)
		}},
		{"huge declared length after the handshake", func() []byte {
			return append(robOpening(robSettings), robFrameBytes(kindRequest, 0, 1, robBody(0xffffffff, nil))...)
		}},
		{"truncated frame after the handshake", func() []byte {
			return append(robOpening(robSettings), robRawHeader(byte(kindRequest), 0, 100, 1)...)
		}},
	}
	for _, g := range garbage {
		raw, err := net.Dial("tcp", addr)
		require.NoError(t, err, g.name)
		_, err = raw.Write(g.bytes())
		require.NoError(t, err, g.name)
		if g.name == "truncated frame after the handshake" {
			raw.(*net.TCPConn).CloseWrite()
		}
		// The server closes this connection (whatever it sent first).
		raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.Copy(io.Discard, raw)
		if err != nil && !isConnReset(err) {
			t.Errorf("%s: the server did not close the connection: %v", g.name, err)
		}
		raw.Close()

		c, err := Dial(ctx, addr, nil)
		require.NoError(t, err, "dial after %s", g.name)
		call(c, "after "+g.name)
		require.NoError(t, c.Close())
	}
	call(early, "still here")
}

// TestWirePeerThatDoesNotReadIsCutOff: a peer that keeps sending PINGs but
// never reads our PONGs cannot make us queue replies without bound: once
// about a megabyte of control frames waits, the connection closes.
func TestWirePeerThatDoesNotReadIsCutOff(t *testing.T) {
	na, nb := net.Pipe()
	defer nb.Close()
	type result struct {
		c   *Conn
		err error
	}
	opened := make(chan result, 1)
	go func() {
		c, err := NewConn(context.Background(), na, &Config{KeepaliveInterval: -1})
		opened <- result{c, err}
	}()
	_, err := nb.Write(robOpening(robSettings))
	require.NoError(t, err)
	ours := robOpening(settings{MaxMessageSize: DefaultMaxMessageSize, NotifyWindow: DefaultNotifyWindow, MaxConcurrentHandlers: DefaultMaxConcurrentHandlers, Headers: headersVersion})
	_, err = io.ReadFull(nb, make([]byte, len(ours))) // the Conn's opening; nothing after it is read
	require.NoError(t, err)
	r := <-opened
	require.NoError(t, r.err)
	defer r.c.Close()

	pings := bytes.Repeat(robFrameBytes(kindPing, 0, 7, nil), 1024)
	for sent := 0; ; sent += len(pings) {
		if _, err := nb.Write(pings); err != nil {
			break // the Conn closed its end
		}
		require.Less(t, sent, 64<<20, "still accepting PINGs after 64 MiB of them")
	}
	err = robWaitClosed(t, r.c)
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorContains(t, err, "peer is not reading")
}
