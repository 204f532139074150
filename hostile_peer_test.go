package bokbok

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bokbok-go/bokbok/internal/testutil"
)

// Hostile peers against a real Server on a loopback socket, played from a
// raw socket (robPeer), not through our own client. Each test checks that
// the server survives, that its live heap stays under a stated bound, that
// a well-behaved client is still served, and (through TestMain's goleak)
// that goroutines end.

// hostileServer serves srv on a loopback listener and returns its address.
func hostileServer(t *testing.T, srv *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		srv.Wait()
	})
	return ln.Addr().String()
}

// hostileDial opens a raw insecure connection: our opening sent, the
// server's SETTINGS read.
func hostileDial(t *testing.T, addr string) *robPeer {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	rp := startRobPeer(nc)
	t.Cleanup(rp.close)
	rp.write(robOpening(hostileSettings))
	require.Equal(t, kindSettings, rp.next(t).kind)
	return rp
}

// hostileSettings is what the raw peers announce.
var hostileSettings = settings{MaxMessageSize: 64 << 20, NotifyWindow: 16, MaxConcurrentHandlers: 16}

// decodingEcho answers every request with its own message, decoded into
// an interface value.
var decodingEcho = HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
	var v any
	if err := req.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
})

// wellBehaved checks that a normal client is served by the server at addr.
func wellBehaved(t *testing.T, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr, &Config{KeepaliveInterval: -1})
	require.NoError(t, err, "a well-behaved client cannot connect")
	defer c.Close()
	var out map[string]string
	require.NoError(t, c.Call(ctx, map[string]string{"say": "hello"}, &out), "a well-behaved client is not served")
	require.Equal(t, "hello", out["say"])
}

// testLogger logs to the test.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// liveHeap returns the live heap after a collection.
func liveHeap() uint64 { return testutil.LiveHeap() }

// requireHeapUnder fails if the live heap grew by more than bound since
// base.
func requireHeapUnder(t *testing.T, base, bound uint64, what string) {
	t.Helper()
	if now := liveHeap(); now > base+bound {
		t.Fatalf("%s: live heap grew by %d MiB, bound %d MiB", what, (now-base)>>20, bound>>20)
	}
}

// hostileAnswer waits for the answer to request id and returns its error
// code ("" for a RESPONSE).
func hostileAnswer(t *testing.T, rp *robPeer, id uint32) string {
	t.Helper()
	for {
		f := rp.next(t)
		if f.id != id || (f.kind != kindResponse && f.kind != kindError) {
			continue
		}
		if f.kind == kindResponse {
			return ""
		}
		rerr, err := parseErrorBody(f.payload[bodyLenSize:])
		require.NoError(t, err)
		return rerr.Code
	}
}

// rawRequest is a REQUEST (no timeout) carrying msg as raw bytes, in
// frames.
func rawRequest(id uint32, msg []byte) []byte {
	return rawMessage(kindRequest, id, append([]byte{0x00}, msg...))
}

// rawMessage is a message of body, cut into the largest frames.
func rawMessage(kind frameKind, id uint32, body []byte) []byte {
	return bytes.Join(robFrames(kind, 0, id, robBody(uint32(len(body)), body), maxFramePayload), nil)
}

// TestHostileMalformedMessages: bodies that are not one well-formed msgpack
// value within the limits (nesting far deeper than 256 levels, counts
// larger than the bytes, an extension whose payload msgpack would read as
// a map of 808 million entries) are refused before any handler sees them,
// or fail only the call whose handler decodes them; nothing else is lost.
func TestHostileMalformedMessages(t *testing.T) {
	var ran atomic.Int32
	srv := &Server{Config: Config{Logger: testLogger(t), Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		ran.Add(1)
		var m map[string]any // decoding into a map is what the ext trick aims at
		if err := req.Decode(&m); err != nil {
			return nil, err
		}
		return m, nil
	})}}
	addr := hostileServer(t, srv)
	base := liveHeap()
	rp := hostileDial(t, addr)

	deep := append(bytes.Repeat([]byte{0x91}, 1<<20), 0xc0)
	rp.write(rawRequest(1, deep))
	require.Equal(t, CodeBadRequest, hostileAnswer(t, rp, 1))
	rp.write(rawRequest(3, []byte{0xdf, 0xff, 0xff, 0xff, 0xff}))
	require.Equal(t, CodeBadRequest, hostileAnswer(t, rp, 3))
	rp.write(rawMessage(kindNotify, 5, deep)) // dropped, and logged
	wellBehaved(t, addr)                      // the notification has been dropped by now: notifications and requests of one peer are independent, so ask again below
	require.Zero(t, ran.Load()-1, "a handler saw a malformed message")

	for i, ext := range []string{"\xd7\xff\xdf0000000", "\xd7\r\xdf0000000", "\xd7\x01\xdf\xff\xff\xff\xff\x00\x00\x00"} {
		id := uint32(7 + 2*i)
		rp.write(rawRequest(id, []byte(ext)))
		hostileAnswer(t, rp, id) // answered: the handler's Decode failed
	}
	requireHeapUnder(t, base, 16<<20, "extension payloads read as maps")
	wellBehaved(t, addr)
}

// TestHostileDecodeAmplification: a request whose decoding into interface
// values would take far more memory than its bytes (one-entry maps, about
// 170 bytes of Go memory per byte) is refused with CodeTooLarge without
// running.
func TestHostileDecodeAmplification(t *testing.T) {
	var ran atomic.Int32
	srv := &Server{Config: Config{MaxReceiveBytes: 32 << 20, Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		ran.Add(1)
		return decodingEcho(ctx, req)
	})}}
	addr := hostileServer(t, srv)
	base := liveHeap()
	rp := hostileDial(t, addr)
	n := 1 << 20
	bomb := append([]byte{0xdd, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, bytes.Repeat([]byte{0x81, 0xa0, 0xc0}, n)...)
	for id := uint32(1); id < 16; id += 2 {
		rp.write(rawRequest(id, bomb))
		require.Equal(t, CodeTooLarge, hostileAnswer(t, rp, id))
	}
	require.Zero(t, ran.Load())
	requireHeapUnder(t, base, 24<<20, "decode amplification")
	wellBehaved(t, addr)
}

// TestHostilePeerThatNeverReads: a peer sends large requests and reads
// nothing. The server holds at most about MaxReceiveBytes for it (request
// bodies and replies waiting to be written) and refuses the rest with
// CodeBusy.
func TestHostilePeerThatNeverReads(t *testing.T) {
	const budget = 8 << 20
	srv := &Server{Config: Config{MaxMessageSize: 2 << 20, MaxReceiveBytes: budget, SendQueueBytes: 1 << 20, KeepaliveInterval: -1, Handler: decodingEcho}}
	addr := hostileServer(t, srv)
	base := liveHeap()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer nc.Close()
	_, err = nc.Write(robOpening(hostileSettings))
	require.NoError(t, err)
	payload := bytes.Repeat([]byte{'x'}, 2<<20-64)
	msg := robMust(appendEncoded(nil, payload))
	for id := uint32(1); id < 2*40; id += 2 { // 80 MiB of requests, nothing read
		nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := nc.Write(rawRequest(id, msg)); err != nil {
			t.Fatalf("the server stopped reading: %v", err)
		}
	}
	requireHeapUnder(t, base, 3*budget+8<<20, "a peer that never reads")
	wellBehaved(t, addr)
}

// TestHostileAnnounceBigSendLittle: many connections announce the largest
// messages and send a frame of each. Buffers are allocated ahead only from
// a budget shared by the whole process, so they cost little.
func TestHostileAnnounceBigSendLittle(t *testing.T) {
	srv := &Server{Config: Config{KeepaliveInterval: -1, Handler: decodingEcho}}
	addr := hostileServer(t, srv)
	base := liveHeap()
	// Each connection's first message is as large as its own budget for
	// buffers allocated ahead; without the process's budget, 60
	// connections would pin 480 MiB.
	first := robBody(reserveBudget, append([]byte{0x00, 0xc6}, make([]byte, 32<<10)...))
	var peers []*robPeer
	for i := 0; i < 60; i++ {
		rp := hostileDial(t, addr)
		peers = append(peers, rp)
		for id := uint32(1); id < 8; id += 2 {
			rp.write(robFrameBytes(kindRequest, 0, id, first))
		}
	}
	wellBehaved(t, addr) // also makes sure the frames above were read
	requireHeapUnder(t, base, globalReserveBudget+48<<20, "announced but unsent messages")
	for _, rp := range peers {
		rp.close()
	}
}

// TestHostileHalfSentRequests: a peer starts more requests than could run
// or wait, finishing none; the connection closes with ErrOverBudget.
func TestHostileHalfSentRequests(t *testing.T) {
	closed := make(chan error, 16)
	srv := &Server{Config: Config{KeepaliveInterval: -1, Handler: decodingEcho, OnClose: func(c *Conn, reason error) {
		if errors.Is(reason, ErrOverBudget) {
			closed <- reason
		}
	}}}
	addr := hostileServer(t, srv)
	base := liveHeap()
	rp := hostileDial(t, addr)
	var b []byte
	for id := uint32(1); id < 2*20000; id += 2 {
		b = append(b, robFrameBytes(kindRequest, 0, id, robBody(1000, []byte{0x00, 0xc4}))...)
	}
	rp.write(b)
	select {
	case <-rp.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the connection stayed open")
	}
	select {
	case err := <-closed:
		require.ErrorIs(t, err, ErrProtocol)
	case <-time.After(30 * time.Second):
		t.Fatal("the connection did not close with ErrOverBudget")
	}
	requireHeapUnder(t, base, 16<<20, "half-sent requests")
	wellBehaved(t, addr)
}

// TestHostileNotificationFlood: notifications beyond the announced
// notify_bytes, while the handler is busy, close the connection.
func TestHostileNotificationFlood(t *testing.T) {
	release := make(chan struct{})
	srv := &Server{Config: Config{NotifyBytes: 1 << 20, KeepaliveInterval: -1, Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		if req.IsNotification() {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil, nil
		}
		return decodingEcho(ctx, req)
	})}}
	defer close(release)
	addr := hostileServer(t, srv)
	rp := hostileDial(t, addr)
	note := robMust(appendEncoded(nil, make([]byte, 600<<10)))
	for id := uint32(1); id < 8; id += 2 {
		rp.write(rawMessage(kindNotify, id, note))
	}
	select {
	case <-rp.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the connection stayed open")
	}
	wellBehaved(t, addr)
}

// TestAbandonedCallsLetGoOfTheirBodies: calls to a peer that never answers,
// given up on by their callers, do not keep their request bodies alive.
func TestAbandonedCallsLetGoOfTheirBodies(t *testing.T) {
	na, nb := net.Pipe()
	rp := startRobPeer(nb)
	defer rp.close()
	go robDiscard(rp) // reads everything, answers nothing
	c, err := robNewConn(na, nb, &Config{KeepaliveInterval: -1}, hostileSettings)
	require.NoError(t, err)
	defer c.Close()
	base := liveHeap()
	body := make([]byte, 5<<20)
	for i := 0; i < 16; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := c.Request(ctx, body)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
	}
	body = nil
	requireHeapUnder(t, base, 16<<20, "abandoned calls")
}
