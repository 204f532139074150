package bokbok

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/nacl/secretbox"
)

// Adversarial tests of secure mode: an attacker who sits on the wire (a
// man in the middle that flips, cuts, drops, replays, reorders and
// reflects bytes), a client that speaks the handshake by hand with hostile
// values, a fake server, slow clients, and counters pushed to their end.
//
// Helpers are prefixed "atk" to stay clear of the other test files.

const atkRealm = "atk.example"

// atkCounters counts what a side's application code saw.
type atkCounters struct {
	opens   atomic.Int32
	handled atomic.Int32
	mu      sync.Mutex
	msgs    []string // the requests the handler ran, decoded as bytes
}

func (n *atkCounters) seen() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// atkHandler echoes like echoHandler and counts.
func atkHandler(n *atkCounters) Handler {
	return HandlerFunc(func(ctx context.Context, r *Request) (any, error) {
		n.handled.Add(1)
		var v []byte
		if err := r.Decode(&v); err != nil {
			return nil, err
		}
		n.mu.Lock()
		n.msgs = append(n.msgs, string(v))
		n.mu.Unlock()
		return v, nil
	})
}

// atkServer returns a secure server for users that counts OnOpen and
// handler runs. Keepalive is off unless cfg says otherwise, so nothing is
// sent that a test did not ask for.
func atkServer(users map[string]Key, cfg Config) (*Server, *atkCounters) {
	n := &atkCounters{}
	if cfg.Realm == "" {
		cfg.Realm = atkRealm
	}
	if cfg.KeepaliveInterval == 0 {
		cfg.KeepaliveInterval = -1
	}
	cfg.Handler = atkHandler(n)
	srv := &Server{
		Config: cfg,
		UserKey: func(user string) (Key, bool) {
			k, ok := users[user]
			return k, ok
		},
		OnOpen: func(*Conn) error { n.opens.Add(1); return nil },
	}
	return srv, n
}

// atkClientConfig is a secure client's configuration.
func atkClientConfig(key Key, user string, n *atkCounters) *Config {
	cfg := &Config{Key: &key, User: user, Realm: atkRealm, KeepaliveInterval: -1}
	if n != nil {
		cfg.Handler = atkHandler(n)
	}
	return cfg
}

type atkServed struct {
	c   *Conn
	err error
}

// atkServeConn runs srv.ServeConn(nc) on its own goroutine.
func atkServeConn(srv *Server, nc net.Conn) <-chan atkServed {
	ch := make(chan atkServed, 1)
	go func() {
		c, err := srv.ServeConn(context.Background(), nc)
		ch <- atkServed{c, err}
	}()
	return ch
}

// atkRecv waits (boundedly) for a value on ch.
func atkRecv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(15 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

// atkDone waits (boundedly) until c has closed and returns its reason.
func atkDone(t testing.TB, c *Conn, what string) error {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not close", what)
	}
	return c.Err()
}

// atkStopServer closes srv and waits for all its connections.
func atkStopServer(srv *Server) {
	srv.Close()
	srv.Wait()
}

// atkIsAny reports whether err matches one of kinds.
func atkIsAny(err error, kinds ...error) bool {
	for _, k := range kinds {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

// atkTyped reports whether err is one of the errors a failed opening may
// give: bokbok's own words, never a bare network error.
func atkTyped(err error) bool {
	return atkIsAny(err, ErrAuth, ErrProtocol, ErrTruncated, ErrHandshakeTimeout, ErrMode, ErrVersion)
}

// atkSettingsFrame is a SETTINGS frame with the defaults.
func atkSettingsFrame() []byte {
	p := settings{
		MaxMessageSize:        DefaultMaxMessageSize,
		NotifyWindow:          DefaultNotifyWindow,
		MaxConcurrentHandlers: DefaultMaxConcurrentHandlers,
		Headers:               headersVersion,
	}.encode()
	return append(appendFrameHeader(nil, kindSettings, 0, len(p), 0), p...)
}

// atkHello builds a client's preamble and message 1 by hand. If ePub is
// set, it is sent as the ephemeral public key instead of the real one
// (and mixed into the handshake as such, so message 1 is otherwise valid).
func atkHello(t testing.TB, key Key, user, realm string, ePub *[32]byte) (*noiseState, []byte) {
	t.Helper()
	ns, err := newNoiseState(securePrologue(realm, user), nil)
	require.NoError(t, err)
	if ePub != nil {
		ns.ePub = *ePub
	}
	m1 := ns.writeMessage1(&key, handshakePayload)
	body := append([]byte{byte(len(user))}, user...)
	return ns, appendHandshakeMsg(appendPreamble(nil, modeSecure), append(body, m1...))
}

// atkRaw is a client speaking secure mode by hand.
type atkRaw struct {
	nc net.Conn
	br *bufio.Reader
	rw *recordWriter
	rr *recordReader
}

// atkRawHandshake sends the preamble and message 1 by hand over nc, reads
// the server's preamble and message 2, and derives the keys; no record is
// read or sent. br reads what follows.
func atkRawHandshake(t testing.TB, nc net.Conn, key Key, user string) (br *bufio.Reader, toServer, toClient Key) {
	t.Helper()
	ns, hello := atkHello(t, key, user, atkRealm, nil)
	_, err := nc.Write(hello)
	require.NoError(t, err)
	br = bufio.NewReader(nc)
	pre := make([]byte, preambleSize)
	_, err = io.ReadFull(br, pre)
	require.NoError(t, err)
	require.Equal(t, appendPreamble(nil, modeSecure), pre)
	m2, err := readHandshakeMsg(br, "message 2")
	require.NoError(t, err)
	require.NotEmpty(t, m2, "the server refused")
	_, err = ns.readMessage2(m2)
	require.NoError(t, err)
	toServer, toClient = ns.split()
	return br, toServer, toClient
}

// atkRawOpen performs a whole client handshake by hand over nc: preamble,
// message 1, message 2, both first records.
func atkRawOpen(t testing.TB, nc net.Conn, key Key, user string) *atkRaw {
	t.Helper()
	br, toServer, toClient := atkRawHandshake(t, nc, key, user)
	r := &atkRaw{nc: nc, br: br,
		rw: newRecordWriter(nc, toServer, dirClientToServer),
		rr: newRecordReader(br, toClient, dirServerToClient)}
	fr := frameReader{r: r.rr}
	h, _, err := fr.next()
	require.NoError(t, err)
	require.Equal(t, kindSettings, h.kind)
	_, err = r.rw.Write(atkSettingsFrame())
	require.NoError(t, err)
	require.NoError(t, r.rw.Flush())
	return r
}

// atkExchange writes input to a fresh connection served by srv, and reads
// everything the server sends until it closes.
func atkExchange(t testing.TB, srv *Server, input []byte) (out []byte, serr error) {
	t.Helper()
	a, b := net.Pipe()
	served := atkServeConn(srv, b)
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		a.Write(input) // the server may rightly stop reading early
	}()
	a.SetReadDeadline(time.Now().Add(15 * time.Second))
	out, err := io.ReadAll(a)
	require.NoError(t, err, "the server did not close the connection")
	a.Close()
	<-wrote
	s := atkRecv(t, served, "ServeConn")
	if s.c != nil {
		s.c.Close()
	}
	return out, s.err
}

// --- a man in the middle ------------------------------------------------

const (
	atkC2S = 0 // client to server
	atkS2C = 1 // server to client
)

var atkDirName = [2]string{"c2s", "s2c"}

// atkTamper is what a byte-level man in the middle does: flip the byte at
// offset off of direction dir with mask, or (cut) forward the bytes before
// off and then cut the wire.
type atkTamper struct {
	dir  int
	off  int // <0: nothing
	mask byte
	cut  bool
}

var atkNoTamper = atkTamper{off: -1}

// atkMITM forwards bytes between a client and a server over two
// net.Pipes, tampering as told, and records everything each side sent.
type atkMITM struct {
	Client, Server net.Conn // give these to the client and to the server
	ends           [2]net.Conn
	wg             sync.WaitGroup
	once           sync.Once

	mu        sync.Mutex
	seen      [2][]byte // what each side sent, before tampering
	delivered [2]int    // bytes each side received: [atkC2S] the server, [atkS2C] the client
}

func atkNewMITM(t testing.TB, tp atkTamper) *atkMITM {
	m := atkPipes()
	m.wg.Add(2)
	go m.forward(atkC2S, m.ends[0], m.ends[1], tp)
	go m.forward(atkS2C, m.ends[1], m.ends[0], tp)
	t.Cleanup(m.close)
	return m
}

func atkPipes() *atkMITM {
	m := &atkMITM{}
	var mc, ms net.Conn
	m.Client, mc = net.Pipe()
	m.Server, ms = net.Pipe()
	m.ends = [2]net.Conn{mc, ms}
	return m
}

// send writes b on, counting what arrived; false if dst is gone.
func (m *atkMITM) send(dir int, dst net.Conn, b []byte) bool {
	n, err := dst.Write(b)
	m.mu.Lock()
	m.delivered[dir] += n
	m.mu.Unlock()
	return err == nil
}

// forward copies src to dst until src ends. Once dst is gone (cut, or its
// owner closed it) it keeps draining src, so that the sender's writes do
// not fail before the sender has read what the other side said; the other
// forwarder ends this one by closing src when its own source ends.
func (m *atkMITM) forward(dir int, src, dst net.Conn, tp atkTamper) {
	defer m.wg.Done()
	defer dst.Close()
	buf := make([]byte, 64<<10)
	off := 0
	broken := false
	for {
		n, err := src.Read(buf)
		if n > 0 {
			b := buf[:n]
			m.mu.Lock()
			m.seen[dir] = append(m.seen[dir], b...)
			m.mu.Unlock()
			if !broken && tp.dir == dir && tp.off >= off && tp.off < off+n {
				i := tp.off - off
				if tp.cut {
					if i > 0 {
						m.send(dir, dst, b[:i])
					}
					dst.Close()
					broken = true
				} else {
					b[i] ^= tp.mask
				}
			}
			if !broken && !m.send(dir, dst, b) {
				broken = true
			}
			off += n
		}
		if err != nil {
			return
		}
	}
}

func (m *atkMITM) close() {
	m.once.Do(func() {
		m.Client.Close()
		m.Server.Close()
		m.ends[0].Close()
		m.ends[1].Close()
		m.wg.Wait()
	})
}

func (m *atkMITM) stream(dir int) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.seen[dir]...)
}

func (m *atkMITM) received(dir int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.delivered[dir]
}

// atkRecPolicy decides what a record-level man in the middle forwards in
// place of record i (0 = the sender's first record): nil drops it.
type atkRecPolicy func(i int, rec []byte) [][]byte

// atkNewRecordMITM forwards the preamble and handshake message of each
// direction as they are, then hands each record to that direction's policy
// (nil: forward as is).
func atkNewRecordMITM(t testing.TB, pol [2]atkRecPolicy) *atkMITM {
	m := atkPipes()
	m.wg.Add(2)
	go m.forwardRecords(atkC2S, m.ends[0], m.ends[1], pol[atkC2S])
	go m.forwardRecords(atkS2C, m.ends[1], m.ends[0], pol[atkS2C])
	t.Cleanup(m.close)
	return m
}

func (m *atkMITM) forwardRecords(dir int, src, dst net.Conn, pol atkRecPolicy) {
	defer m.wg.Done()
	defer dst.Close()
	defer io.Copy(io.Discard, src) // drain once anything went wrong
	br := bufio.NewReader(src)
	broken := false
	send := func(b []byte) {
		if !broken && !m.send(dir, dst, b) {
			broken = true
		}
	}
	head := make([]byte, preambleSize+2)
	if _, err := io.ReadFull(br, head); err != nil {
		return
	}
	body := make([]byte, binary.BigEndian.Uint16(head[preambleSize:]))
	if _, err := io.ReadFull(br, body); err != nil {
		return
	}
	send(append(head, body...))
	for i := 0; ; i++ {
		var hdr [recordLenSize]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		size := binary.BigEndian.Uint32(hdr[:])
		if size > maxSealedRecord {
			return
		}
		rec := make([]byte, recordLenSize+int(size))
		copy(rec, hdr[:])
		if _, err := io.ReadFull(br, rec[recordLenSize:]); err != nil {
			return
		}
		out := [][]byte{rec}
		if pol != nil {
			out = pol(i, rec)
		}
		for _, b := range out {
			send(b)
		}
	}
}

// --- running a connection through the man in the middle ------------------

// atkOutcome is what happened on both ends of a tampered connection.
type atkOutcome struct {
	cerr, serr     error // the openings' errors
	callErr        error // the client's call, if its opening succeeded
	cReason        error // the client's close reason, if it opened and then failed
	sReason        error // likewise for the server
	opens, handled int32 // the server's OnOpen and handler runs
	cHandled       int32 // the client's handler runs
	received       [2]int
}

// atkThrough opens a secure connection through a man in the middle that
// tampers as told. If the client opens, it makes one call. Whatever side
// opened is then waited for until it closes, unless both opened (the
// untampered case), and everything is torn down before returning.
func atkThrough(t *testing.T, key Key, tp atkTamper, timeout time.Duration) atkOutcome {
	var o atkOutcome
	m := atkNewMITM(t, tp)
	srv, sn := atkServer(map[string]Key{"alice": key}, Config{HandshakeTimeout: timeout})
	defer atkStopServer(srv)
	served := atkServeConn(srv, m.Server)
	cn := &atkCounters{}
	ccfg := atkClientConfig(key, "alice", cn)
	ccfg.HandshakeTimeout = timeout
	c, cerr := NewConn(context.Background(), m.Client, ccfg)
	o.cerr = cerr
	if cerr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var out []byte
		o.callErr = c.Call(ctx, []byte("tampered?"), &out)
		cancel()
		if o.callErr != nil {
			o.cReason = atkDone(t, c, "the client")
		}
	}
	s := atkRecv(t, served, "ServeConn")
	o.serr = s.err
	if s.c != nil && (cerr != nil || o.callErr != nil) {
		o.sReason = atkDone(t, s.c, "the server's connection")
	}
	if c != nil {
		c.Close()
	}
	if s.c != nil {
		s.c.Close()
	}
	m.close()
	o.opens, o.handled, o.cHandled = sn.opens.Load(), sn.handled.Load(), cn.handled.Load()
	o.received = [2]int{m.received(atkC2S), m.received(atkS2C)}
	return o
}

// atkLayout is the byte layout of a clean opening, learnt from one.
type atkLayout struct {
	stream [2][]byte // each side's opening: preamble, handshake message, first record
	hsEnd  [2]int    // where each side's handshake message ends
}

func atkLearnLayout(t *testing.T, key Key) atkLayout {
	m := atkNewMITM(t, atkNoTamper)
	srv, _ := atkServer(map[string]Key{"alice": key}, Config{})
	defer atkStopServer(srv)
	served := atkServeConn(srv, m.Server)
	c, err := NewConn(testCtx(t), m.Client, atkClientConfig(key, "alice", nil))
	require.NoError(t, err)
	s := atkRecv(t, served, "ServeConn")
	require.NoError(t, s.err)
	var l atkLayout
	for dir := range 2 {
		l.stream[dir] = m.stream(dir)
		l.hsEnd[dir] = preambleSize + 2 + int(binary.BigEndian.Uint16(l.stream[dir][preambleSize:]))
		rec := l.stream[dir][l.hsEnd[dir]:]
		require.GreaterOrEqual(t, len(rec), recordLenSize)
		require.Equal(t, recordLenSize+int(binary.BigEndian.Uint32(rec)), len(rec), "%s: one whole first record", atkDirName[dir])
	}
	c.Close()
	s.c.Close()
	return l
}

// region names the part of an opening that offset off of dir falls in.
func (l atkLayout) region(dir, off int) string {
	switch {
	case off < preambleSize:
		return "preamble"
	case off < preambleSize+2:
		return "msglen"
	case dir == atkC2S && off == preambleSize+2:
		return "userlen"
	case off < l.hsEnd[dir]:
		return "msg"
	case off < l.hsEnd[dir]+recordLenSize:
		return "reclen"
	case off < len(l.stream[dir]):
		return "record"
	}
	return "after"
}

// --- 2. low-order ephemeral keys ---------------------------------------

// atkLowOrder are the X25519 public keys whose shared secret with any
// private key is zero: the points of small order, in canonical and
// non-canonical encodings, and with bit 255 (which X25519 ignores) set.
var atkLowOrder = []string{
	"0000000000000000000000000000000000000000000000000000000000000000",
	"0100000000000000000000000000000000000000000000000000000000000000",
	"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
	"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"0000000000000000000000000000000000000000000000000000000000000080",
	"0100000000000000000000000000000000000000000000000000000000000080",
	"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
	"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7",
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
}

func atkLowOrderPoints(t testing.TB) [][32]byte {
	var pts [][32]byte
	k := mustKey(t)
	for _, h := range atkLowOrder {
		var p [32]byte
		copy(p[:], unhex(t, h))
		_, err := curve25519.X25519(k[:], p[:])
		require.Error(t, err, "%s should be a low-order point", h)
		pts = append(pts, p)
	}
	return pts
}

// TestAtkLowOrderMessage1 sends a real server message 1 whose ephemeral key
// is a low-order point, otherwise valid (encrypted with the right key): the
// server refuses with the two-byte refusal and opens nothing. The same
// message with an honest ephemeral key is accepted, so it is the key alone
// that is refused.
func TestAtkLowOrderMessage1(t *testing.T) {
	alice := mustKey(t)
	srv, n := atkServer(map[string]Key{"alice": alice}, Config{})
	defer atkStopServer(srv)
	refusal := append(appendPreamble(nil, modeSecure), 0, 0)

	for _, p := range atkLowOrderPoints(t) {
		t.Run(hex.EncodeToString(p[:4])+".."+hex.EncodeToString(p[31:]), func(t *testing.T) {
			_, hello := atkHello(t, alice, "alice", atkRealm, &p)
			out, serr := atkExchange(t, srv, hello)
			require.Equal(t, refusal, out, "the server must answer with its preamble and a refusal, then close")
			require.ErrorIs(t, serr, ErrAuth)
		})
	}
	require.Zero(t, n.opens.Load(), "OnOpen ran")
	require.Zero(t, n.handled.Load(), "a handler ran")

	// Control: the same hand-made message 1 with an honest key opens.
	a, b := net.Pipe()
	served := atkServeConn(srv, b)
	raw := atkRawOpen(t, a, alice, "alice")
	s := atkRecv(t, served, "ServeConn")
	require.NoError(t, s.err)
	require.Equal(t, "alice", s.c.User())
	require.EqualValues(t, 1, n.opens.Load())
	raw.nc.Close()
	atkDone(t, s.c, "the server's connection")
}

// atkFakeServer reads a client's opening on nc by hand and answers as a
// server that knows key would, but with ePub (if set) as its ephemeral
// key. With full, it also sends its first record and reads the client's.
// It returns the transport keys.
func atkFakeServer(t testing.TB, nc net.Conn, key Key, ePub *[32]byte, full bool) (toServer, toClient Key) {
	t.Helper()
	br, toServer, toClient := atkFakeServerHandshake(t, nc, key, ePub)
	if full {
		rw := newRecordWriter(nc, toClient, dirServerToClient)
		_, err := rw.Write(atkSettingsFrame())
		require.NoError(t, err)
		require.NoError(t, rw.Flush())
		fr := frameReader{r: newRecordReader(br, toServer, dirClientToServer)}
		h, _, err := fr.next()
		require.NoError(t, err, "the client's first record")
		require.Equal(t, kindSettings, h.kind)
	}
	return toServer, toClient
}

// atkFakeServerHandshake reads a client's preamble and message 1 by hand
// over nc, answers with message 2 (with ePub, if set, as its ephemeral
// key), and returns the keys and the reader of what follows; no record is
// read or sent.
func atkFakeServerHandshake(t testing.TB, nc net.Conn, key Key, ePub *[32]byte) (br *bufio.Reader, toServer, toClient Key) {
	t.Helper()
	br = bufio.NewReader(nc)
	pre := make([]byte, preambleSize)
	_, err := io.ReadFull(br, pre)
	require.NoError(t, err)
	require.Equal(t, appendPreamble(nil, modeSecure), pre)
	body, err := readHandshakeMsg(br, "message 1")
	require.NoError(t, err)
	user, m1, err := splitMessage1(body)
	require.NoError(t, err)
	ns, err := newNoiseState(securePrologue(atkRealm, user), nil)
	require.NoError(t, err)
	_, err = ns.readMessage1(&key, m1)
	require.NoError(t, err)
	if ePub != nil {
		ns.ePub = *ePub
	}
	m2, err := ns.writeMessage2(handshakePayload)
	require.NoError(t, err)
	_, err = nc.Write(appendHandshakeMsg(appendPreamble(nil, modeSecure), m2))
	require.NoError(t, err)
	toServer, toClient = ns.split()
	return br, toServer, toClient
}

type atkOpened struct {
	c   *Conn
	err error
}

func atkNewConn(nc net.Conn, cfg *Config) <-chan atkOpened {
	ch := make(chan atkOpened, 1)
	go func() {
		c, err := NewConn(context.Background(), nc, cfg)
		ch <- atkOpened{c, err}
	}()
	return ch
}

// TestAtkLowOrderMessage2 answers a real client with a message 2 whose
// ephemeral key is a low-order point, from a fake server that knows the
// key: the client refuses it (ErrAuth, naming the low-order point). An
// honest message 2 from the same fake server opens the connection.
func TestAtkLowOrderMessage2(t *testing.T) {
	alice := mustKey(t)
	for _, p := range atkLowOrderPoints(t) {
		t.Run(hex.EncodeToString(p[:4])+".."+hex.EncodeToString(p[31:]), func(t *testing.T) {
			a, b := net.Pipe()
			defer b.Close()
			opened := atkNewConn(a, atkClientConfig(alice, "alice", nil))
			atkFakeServer(t, b, alice, &p, false)
			r := atkRecv(t, opened, "NewConn")
			require.Nil(t, r.c)
			require.ErrorIs(t, r.err, ErrAuth)
			require.Contains(t, r.err.Error(), "low-order")
		})
	}
	t.Run("control", func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		opened := atkNewConn(a, atkClientConfig(alice, "alice", nil))
		atkFakeServer(t, b, alice, nil, true)
		r := atkRecv(t, opened, "NewConn")
		require.NoError(t, r.err)
		b.Close()
		reason := atkDone(t, r.c, "the client")
		require.ErrorIs(t, reason, ErrTruncated)
	})
}

// --- 3. flipping bytes of the opening --------------------------------------

// atkCheckTamperedOutcome checks what every tampered opening must give: no
// handler ran, OnOpen ran only when the server had rightly authenticated
// the client, and every error is bokbok's.
func atkCheckTamperedOutcome(t *testing.T, l atkLayout, tp atkTamper, o atkOutcome) {
	t.Helper()
	reg := l.region(tp.dir, tp.off)
	// The server rightly opens once the client's first record got through
	// whole: when the tampering is on the server's side of the opening, or
	// (a cut) comes after both openings.
	serverMayOpen := (tp.dir == atkS2C && (reg == "reclen" || reg == "record")) || reg == "after"
	if !serverMayOpen {
		assert.Zero(t, o.opens, "OnOpen ran")
	}
	assert.LessOrEqual(t, o.opens, int32(1))
	assert.Zero(t, o.cHandled, "the client's handler ran")
	if !(tp.cut && tp.dir == atkS2C && reg == "after") {
		assert.Zero(t, o.handled, "the server's handler ran")
	}
	// A side that opened and then lost its peer fails with ErrTruncated
	// (its reader saw the stream end without CLOSE), or with the network
	// error of a write that came first (net.Pipe: io.ErrClosedPipe).
	if o.cerr == nil {
		assert.Error(t, o.callErr, "the client's call succeeded over a tampered connection")
		assert.ErrorIs(t, o.callErr, ErrClosed)
		assert.ErrorIs(t, o.cReason, ErrClosed)
		assert.True(t, atkIsAny(o.cReason, ErrTruncated, io.ErrClosedPipe), "the client's connection ended with %v, want ErrTruncated", o.cReason)
	}
	if o.serr == nil {
		assert.True(t, serverMayOpen, "the server opened")
		assert.ErrorIs(t, o.sReason, ErrClosed)
		assert.True(t, atkIsAny(o.sReason, ErrTruncated, io.ErrClosedPipe), "the server's connection ended with %v, want ErrTruncated", o.sReason)
	}
}

// atkPipeSetDeadlineFailed reports whether err is what an opening over
// net.Pipe gives when the far end closed just before the handshake set its
// deadline (handshake.go:62) or just after the opening completed, before
// the handshake cleared its deadline (handshake.go:73): net.Pipe's
// SetDeadline fails once either end is closed, and the handshake reports
// that as a bare network error ("bokbok: handshake: io: read/write on
// closed pipe"), not a typed one. Over TCP the first case is a read of
// io.EOF, and in the second the opening succeeds and the connection then
// fails with ErrTruncated.
func atkPipeSetDeadlineFailed(err error) bool {
	return errors.Is(err, io.ErrClosedPipe) && strings.HasPrefix(err.Error(), "bokbok: handshake: ")
}

// TestAtkHandshakeByteFlips runs a man in the middle that flips one byte,
// at every offset of both openings (preamble, message 1 or 2, first
// record), with two masks: every flip fails the connection with typed
// errors, and no handler or OnOpen runs for a client that did not prove
// itself.
func TestAtkHandshakeByteFlips(t *testing.T) {
	alice := mustKey(t)
	l := atkLearnLayout(t, alice)
	const timeout = 750 * time.Millisecond

	// Control: the man in the middle alone changes nothing.
	o := atkThrough(t, alice, atkNoTamper, 10*time.Second)
	require.NoError(t, o.cerr)
	require.NoError(t, o.serr)
	require.NoError(t, o.callErr)
	require.EqualValues(t, 1, o.opens)
	require.EqualValues(t, 1, o.handled)

	for dir := range 2 {
		for off := range l.stream[dir] {
			for _, mask := range []byte{0x01, 0xff} {
				tp := atkTamper{dir: dir, off: off, mask: mask}
				reg := l.region(dir, off)
				t.Run(fmt.Sprintf("%s/%d_%s/%02x", atkDirName[dir], off, reg, mask), func(t *testing.T) {
					t.Parallel()
					o := atkThrough(t, alice, tp, timeout)
					atkCheckTamperedOutcome(t, l, tp, o)
					switch where := atkDirName[dir] + "/" + reg; where {
					case "c2s/preamble":
						assert.True(t, atkIsAny(o.serr, ErrProtocol, ErrVersion, ErrMode), "server: %v", o.serr)
						assert.True(t, atkTyped(o.cerr), "client: %v", o.cerr)
					case "c2s/msglen":
						assert.True(t, atkIsAny(o.serr, ErrProtocol, ErrAuth, ErrHandshakeTimeout), "server: %v", o.serr)
						assert.True(t, atkIsAny(o.cerr, ErrProtocol, ErrAuth, ErrHandshakeTimeout), "client: %v", o.cerr)
					case "c2s/userlen":
						assert.True(t, atkIsAny(o.serr, ErrProtocol, ErrAuth), "server: %v", o.serr)
						assert.True(t, atkIsAny(o.cerr, ErrProtocol, ErrAuth), "client: %v", o.cerr)
					case "c2s/msg":
						// The structure is intact: a refusal, seen as one.
						assert.ErrorIs(t, o.serr, ErrAuth, "server")
						assert.ErrorIs(t, o.cerr, ErrAuth, "client")
						if o.cerr != nil {
							assert.Contains(t, o.cerr.Error(), "refused")
						}
					case "c2s/reclen", "c2s/record":
						if !atkPipeSetDeadlineFailed(o.cerr) {
							assert.NoError(t, o.cerr, "client (it has all it needs from the server)")
						}
						assert.True(t, atkIsAny(o.serr, ErrAuth, ErrHandshakeTimeout), "server: %v", o.serr)
					case "s2c/preamble":
						assert.True(t, atkIsAny(o.cerr, ErrProtocol, ErrVersion, ErrMode), "client: %v", o.cerr)
						assert.True(t, atkIsAny(o.serr, ErrAuth, ErrHandshakeTimeout), "server: %v", o.serr)
					case "s2c/msglen":
						assert.True(t, atkIsAny(o.cerr, ErrProtocol, ErrAuth, ErrHandshakeTimeout), "client: %v", o.cerr)
						assert.True(t, atkIsAny(o.serr, ErrAuth, ErrHandshakeTimeout), "server: %v", o.serr)
					case "s2c/msg":
						assert.ErrorIs(t, o.cerr, ErrAuth, "client")
						assert.True(t, atkIsAny(o.serr, ErrAuth, ErrHandshakeTimeout), "server: %v", o.serr)
					case "s2c/reclen", "s2c/record":
						assert.True(t, atkIsAny(o.cerr, ErrProtocol, ErrHandshakeTimeout), "client: %v", o.cerr)
						if !atkPipeSetDeadlineFailed(o.serr) {
							assert.NoError(t, o.serr, "server (the client confirmed the key before it saw the flip)")
						}
					default:
						t.Fatalf("no expectation for %s", where)
					}
				})
			}
		}
	}
}

// --- 4. cutting the stream --------------------------------------------------

// TestAtkHandshakeCuts cuts the wire after every prefix of each side's
// opening (and right after it, before the first call): the side that saw
// the cut reports the right typed error, the other side too, and nothing
// runs for an unauthenticated client.
func TestAtkHandshakeCuts(t *testing.T) {
	alice := mustKey(t)
	l := atkLearnLayout(t, alice)
	for dir := range 2 {
		for off := 0; off <= len(l.stream[dir]); off++ {
			tp := atkTamper{dir: dir, off: off, cut: true}
			reg := l.region(dir, off)
			t.Run(fmt.Sprintf("%s/%d_%s", atkDirName[dir], off, reg), func(t *testing.T) {
				t.Parallel()
				o := atkThrough(t, alice, tp, 5*time.Second)
				atkCheckTamperedOutcome(t, l, tp, o)
				// The receiver of the cut direction saw exactly off bytes.
				got, other := o.serr, o.cerr
				gotName, otherName := "server", "client"
				if dir == atkS2C {
					got, other = other, got
					gotName, otherName = otherName, gotName
				}
				switch {
				case off == 0:
					if !atkPipeSetDeadlineFailed(got) {
						assert.ErrorIs(t, got, io.EOF, "%s, which received nothing", gotName)
					}
				case reg == "preamble":
					assert.ErrorIs(t, got, ErrProtocol, gotName)
					assert.ErrorContains(t, got, "truncated preamble", gotName)
				case reg == "msglen" || reg == "userlen" || reg == "msg":
					assert.ErrorIs(t, got, ErrProtocol, gotName)
					assert.ErrorContains(t, got, "stream ended in handshake message", gotName)
				case reg == "reclen" || reg == "record":
					assert.ErrorIs(t, got, ErrTruncated, gotName)
					if dir == atkC2S {
						assert.ErrorIs(t, got, ErrAuth, "server: the client never confirmed the key")
					}
				case reg == "after":
					if !atkPipeSetDeadlineFailed(got) {
						assert.NoError(t, got, "%s has its whole opening", gotName)
					}
				}
				// The other side may have seen anything up to the cut.
				otherReceived := o.received[1-dir]
				if other != nil && !atkTyped(other) && !atkPipeSetDeadlineFailed(other) {
					assert.True(t, otherReceived == 0 && errors.Is(other, io.EOF),
						"%s (received %d bytes): untyped error %v", otherName, otherReceived, other)
				}
			})
		}
	}
}

// TestAtkCloseVersusCut: a stream that ends without a CLOSE record after
// the handshake is a truncation (ErrTruncated, ErrClosed on Err), while
// the peer's Close or Shutdown, which send CLOSE, end it cleanly with
// io.EOF or ErrShutdown, on both ends, over net.Pipe and over TCP, from
// either side. Each clean close is repeated, as a close that skips its
// CLOSE record only now and then is still a false alarm of truncation.
func TestAtkCloseVersusCut(t *testing.T) {
	alice := mustKey(t)
	type pairFn func(t *testing.T) (client, server *Conn, stop func())
	pairs := map[string]pairFn{
		"pipe": func(t *testing.T) (*Conn, *Conn, func()) {
			srv, _ := atkServer(map[string]Key{"alice": alice}, Config{})
			a, b := net.Pipe()
			served := atkServeConn(srv, b)
			c, err := NewConn(testCtx(t), a, atkClientConfig(alice, "alice", &atkCounters{}))
			require.NoError(t, err)
			s := atkRecv(t, served, "ServeConn")
			require.NoError(t, s.err)
			return c, s.c, func() { c.Close(); atkStopServer(srv) }
		},
		"tcp": func(t *testing.T) (*Conn, *Conn, func()) {
			srv, _ := atkServer(map[string]Key{"alice": alice}, Config{})
			ln, err := Listen("127.0.0.1:0")
			require.NoError(t, err)
			defer ln.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				nc, _ := ln.Accept()
				accepted <- nc
			}()
			opened := make(chan atkOpened, 1)
			go func() {
				c, err := Dial(context.Background(), ln.Addr().String(), atkClientConfig(alice, "alice", &atkCounters{}))
				opened <- atkOpened{c, err}
			}()
			nc := atkRecv(t, accepted, "Accept")
			require.NotNil(t, nc)
			s, err := srv.ServeConn(testCtx(t), nc)
			require.NoError(t, err)
			o := atkRecv(t, opened, "Dial")
			require.NoError(t, o.err)
			return o.c, s, func() { o.c.Close(); atkStopServer(srv) }
		},
	}
	const rounds = 25
	for _, pname := range []string{"pipe", "tcp"} {
		pair := pairs[pname]
		for _, side := range []string{"client", "server"} {
			// open returns the side that acts first (x) and its peer (y),
			// after a call each way.
			open := func(t *testing.T) (x, y *Conn, stop func()) {
				c, s, stop := pair(t)
				require.NoError(t, atkCall(t, c, "hi"))
				require.NoError(t, atkCall(t, s, "hi"))
				if side == "server" {
					return s, c, stop
				}
				return c, s, stop
			}
			t.Run(pname+"/"+side+"/cut", func(t *testing.T) {
				x, y, stop := open(t)
				defer stop()
				x.nc.Close() // the wire goes: no CLOSE record
				reason := atkDone(t, y, "the peer")
				assert.ErrorIs(t, reason, ErrClosed)
				assert.ErrorIs(t, reason, ErrTruncated)
				atkDone(t, x, "the cut side")
			})
			t.Run(pname+"/"+side+"/Close", func(t *testing.T) {
				truncated := 0
				for range rounds {
					x, y, stop := open(t)
					require.NoError(t, x.Close())
					reason := atkDone(t, y, "the peer")
					require.ErrorIs(t, reason, ErrClosed)
					if errors.Is(reason, ErrTruncated) {
						truncated++
					} else {
						require.ErrorIs(t, reason, io.EOF)
					}
					stop()
				}
				// Close gives the CLOSE record 100 ms (PROTOCOL.md §12 allows
				// leaving it out when it cannot be written at once); on a
				// loaded machine the peer may not read it in time, so only
				// a Close that never sends it fails here.
				assert.Less(t, truncated, rounds, "the peer saw ErrTruncated after every Close")
				t.Logf("truncated after a Close in %d of %d rounds", truncated, rounds)
			})
			t.Run(pname+"/"+side+"/Shutdown", func(t *testing.T) {
				truncated := [2]int{}
				for range rounds {
					x, y, stop := open(t)
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					require.NoError(t, x.Shutdown(ctx))
					cancel()
					for i, c := range []*Conn{y, x} {
						reason := atkDone(t, c, "a side")
						if errors.Is(reason, ErrTruncated) {
							truncated[i]++
						} else {
							require.ErrorIs(t, reason, ErrShutdown)
						}
					}
					stop()
				}
				assert.Zero(t, truncated[0], "the peer saw ErrTruncated after a Shutdown in %d of %d rounds", truncated[0], rounds)
				assert.Zero(t, truncated[1], "the side shutting down saw ErrTruncated in %d of %d rounds", truncated[1], rounds)
			})
		}
	}
}

// atkSlowReturnConn delivers every write at once but returns from Write
// only after a pause once armed, as a writer goroutine that is scheduled
// late after its system call does.
type atkSlowReturnConn struct {
	net.Conn
	pause atomic.Int64 // nanoseconds
}

func (sc *atkSlowReturnConn) Write(p []byte) (int, error) {
	n, err := sc.Conn.Write(p)
	time.Sleep(time.Duration(sc.pause.Load()))
	return n, err
}

// TestAtkCloseAfterDeliveredReply closes a connection right after its
// reply has reached the peer, while its writer goroutine is still on its
// way back from the write that delivered it: nothing is in flight, so the
// Close should send CLOSE and the peer see a clean io.EOF.
func TestAtkCloseAfterDeliveredReply(t *testing.T) {
	alice := mustKey(t)
	srv, _ := atkServer(map[string]Key{"alice": alice}, Config{})
	defer atkStopServer(srv)
	a, b := net.Pipe()
	slow := &atkSlowReturnConn{Conn: b}
	served := atkServeConn(srv, slow)
	c, err := NewConn(testCtx(t), a, atkClientConfig(alice, "alice", nil))
	require.NoError(t, err)
	defer c.Close()
	s := atkRecv(t, served, "ServeConn")
	require.NoError(t, s.err)
	slow.pause.Store(int64(50 * time.Millisecond))
	require.NoError(t, atkCall(t, c, "the last call")) // the reply has arrived whole
	require.NoError(t, s.c.Close())
	reason := atkDone(t, c, "the client")
	assert.ErrorIs(t, reason, io.EOF)
	assert.NotErrorIs(t, reason, ErrTruncated, "a plain Close was reported as a cut")
}

// TestAtkRecordStreamCuts cuts a stream of records after every byte: the
// reader delivers exactly the records that arrived whole, then reports
// ErrTruncated; only the whole stream, ending in CLOSE, ends with io.EOF.
func TestAtkRecordStreamCuts(t *testing.T) {
	key := mustKey(t)
	var wire bytes.Buffer
	rw := newRecordWriter(&wire, key, dirServerToClient)
	contents := [][]byte{[]byte("first"), bytes.Repeat([]byte{7}, 300), []byte("x")}
	var ends []int      // where each record ends on the wire
	var delivered []int // content delivered once each record is whole
	total := 0
	for _, c := range contents {
		_, err := rw.Write(c)
		require.NoError(t, err)
		require.NoError(t, rw.Flush())
		total += len(c)
		ends, delivered = append(ends, wire.Len()), append(delivered, total)
	}
	require.NoError(t, rw.close(time.Time{}))
	stream := wire.Bytes()
	all := bytes.Join(contents, nil)
	for cut := 0; cut <= len(stream); cut++ {
		rr := newRecordReader(bytes.NewReader(stream[:cut]), key, dirServerToClient)
		got, err := io.ReadAll(rr)
		want := 0
		for i, e := range ends {
			if cut >= e {
				want = delivered[i]
			}
		}
		require.Equal(t, all[:want], got, "cut at %d", cut)
		if cut == len(stream) {
			require.NoError(t, err, "the whole stream, with CLOSE") // ReadAll hides io.EOF
		} else {
			require.ErrorIs(t, err, ErrTruncated, "cut at %d", cut)
			_, again := rr.Read(make([]byte, 1))
			require.ErrorIs(t, again, ErrTruncated, "sticky")
		}
	}
}

// --- 5. replay ------------------------------------------------------------

// TestAtkReplaySession records everything a client sent in a whole
// session (opening, a call, CLOSE) and replays it to a fresh connection of
// the same server: message 1 is accepted (it cannot be told from a fresh
// one) but the key confirmation does not open, so no OnOpen and no
// handler run.
func TestAtkReplaySession(t *testing.T) {
	alice := mustKey(t)
	srv, n := atkServer(map[string]Key{"alice": alice}, Config{})
	defer atkStopServer(srv)

	m := atkNewMITM(t, atkNoTamper)
	served := atkServeConn(srv, m.Server)
	c, err := NewConn(testCtx(t), m.Client, atkClientConfig(alice, "alice", nil))
	require.NoError(t, err)
	s := atkRecv(t, served, "ServeConn")
	require.NoError(t, s.err)
	var out []byte
	require.NoError(t, c.Call(testCtx(t), []byte("transfer 100"), &out))
	require.NoError(t, c.Close())
	atkDone(t, s.c, "the server's connection")
	m.close()
	recording := m.stream(atkC2S)
	require.EqualValues(t, 1, n.opens.Load())
	require.EqualValues(t, 1, n.handled.Load())

	for i := range 3 {
		out, serr := atkExchange(t, srv, recording)
		require.ErrorIs(t, serr, ErrAuth, "replay %d", i)
		require.ErrorIs(t, serr, ErrProtocol, "replay %d", i)
		require.ErrorContains(t, serr, "record 0 failed authentication", "replay %d", i)
		// The server did answer message 1 (with a fresh message 2).
		require.Greater(t, len(out), preambleSize+2, "replay %d", i)
	}
	require.EqualValues(t, 1, n.opens.Load(), "OnOpen ran for a replay")
	require.EqualValues(t, 1, n.handled.Load(), "a handler ran for a replay")
}

// atkRecordSession opens a client and a server through a record-level man
// in the middle.
func atkRecordSession(t *testing.T, key Key, pol [2]atkRecPolicy) (c, s *Conn, sn *atkCounters) {
	m := atkNewRecordMITM(t, pol)
	srv, sn := atkServer(map[string]Key{"alice": key}, Config{})
	t.Cleanup(func() { atkStopServer(srv) })
	served := atkServeConn(srv, m.Server)
	c, err := NewConn(testCtx(t), m.Client, atkClientConfig(key, "alice", &atkCounters{}))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	r := atkRecv(t, served, "ServeConn")
	require.NoError(t, r.err)
	return c, r.c, sn
}

// atkCallAsync makes a call on its own goroutine.
func atkCallAsync(c *Conn, msg string) <-chan error {
	ch := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		var out []byte
		err := c.Call(ctx, []byte(msg), &out)
		if err == nil && string(out) != msg {
			err = fmt.Errorf("echo of %q came back as %q", msg, out)
		}
		ch <- err
	}()
	return ch
}

// atkRecordAuthFailure checks a connection ended because record n did not
// open.
func atkRecordAuthFailure(t *testing.T, reason error, n int) {
	t.Helper()
	require.ErrorIs(t, reason, ErrClosed)
	var pe *ProtocolError
	require.ErrorAs(t, reason, &pe)
	require.Contains(t, pe.Reason, fmt.Sprintf("record %d failed authentication", n))
}

// TestAtkRecordTampering replays, duplicates, reorders and drops records
// of a live session, in each direction: the receiver fails with a protocol
// error naming the record that did not authenticate, and never acts on the
// tampered record.
func TestAtkRecordTampering(t *testing.T) {
	alice := mustKey(t)

	t.Run("duplicate", func(t *testing.T) {
		c, s, sn := atkRecordSession(t, alice, [2]atkRecPolicy{atkC2S: func(i int, rec []byte) [][]byte {
			if i == 1 {
				return [][]byte{rec, rec}
			}
			return [][]byte{rec}
		}})
		call := atkCallAsync(c, "once")
		atkRecordAuthFailure(t, atkDone(t, s, "the server"), 2)
		atkRecv(t, call, "the call")
		require.Equal(t, []string{"once"}, sn.seen(), "the duplicate ran")
	})

	t.Run("replay of an earlier record", func(t *testing.T) {
		var first []byte
		c, s, sn := atkRecordSession(t, alice, [2]atkRecPolicy{atkC2S: func(i int, rec []byte) [][]byte {
			switch i {
			case 1:
				first = rec
			case 2:
				return [][]byte{first} // the first call again, instead of the second
			}
			return [][]byte{rec}
		}})
		var out []byte
		require.NoError(t, c.Call(testCtx(t), []byte("pay 5"), &out))
		call := atkCallAsync(c, "pay 6")
		atkRecordAuthFailure(t, atkDone(t, s, "the server"), 2)
		require.Error(t, atkRecv(t, call, "the second call"))
		require.Equal(t, []string{"pay 5"}, sn.seen(), "the replayed record ran again, or the replaced one ran")
	})

	t.Run("replay of the key confirmation", func(t *testing.T) {
		var first []byte
		c, s, sn := atkRecordSession(t, alice, [2]atkRecPolicy{atkC2S: func(i int, rec []byte) [][]byte {
			switch i {
			case 0:
				first = rec
			case 1:
				return [][]byte{first}
			}
			return [][]byte{rec}
		}})
		call := atkCallAsync(c, "hello")
		atkRecordAuthFailure(t, atkDone(t, s, "the server"), 1)
		require.Error(t, atkRecv(t, call, "the call"))
		require.Empty(t, sn.seen())
	})

	t.Run("reorder", func(t *testing.T) {
		held := make(chan struct{})
		var first []byte
		c, s, sn := atkRecordSession(t, alice, [2]atkRecPolicy{atkC2S: func(i int, rec []byte) [][]byte {
			switch i {
			case 1:
				first = rec
				close(held)
				return nil
			case 2:
				return [][]byte{rec, first}
			}
			return [][]byte{rec}
		}})
		call1 := atkCallAsync(c, "one")
		atkRecv(t, held, "the first call's record")
		call2 := atkCallAsync(c, "two")
		atkRecordAuthFailure(t, atkDone(t, s, "the server"), 1)
		require.Error(t, atkRecv(t, call1, "the first call"))
		require.Error(t, atkRecv(t, call2, "the second call"))
		require.Empty(t, sn.seen())
	})

	t.Run("drop", func(t *testing.T) {
		dropped := make(chan struct{})
		c, s, sn := atkRecordSession(t, alice, [2]atkRecPolicy{atkC2S: func(i int, rec []byte) [][]byte {
			if i == 1 {
				close(dropped)
				return nil
			}
			return [][]byte{rec}
		}})
		call1 := atkCallAsync(c, "lost")
		atkRecv(t, dropped, "the first call's record")
		call2 := atkCallAsync(c, "next")
		atkRecordAuthFailure(t, atkDone(t, s, "the server"), 1)
		require.Error(t, atkRecv(t, call1, "the first call"))
		require.Error(t, atkRecv(t, call2, "the second call"))
		require.Empty(t, sn.seen())
	})

	t.Run("server to client: duplicate", func(t *testing.T) {
		c, _, _ := atkRecordSession(t, alice, [2]atkRecPolicy{atkS2C: func(i int, rec []byte) [][]byte {
			if i == 1 {
				return [][]byte{rec, rec}
			}
			return [][]byte{rec}
		}})
		call := atkCallAsync(c, "echo me")
		atkRecordAuthFailure(t, atkDone(t, c, "the client"), 2)
		atkRecv(t, call, "the call") // its answer may or may not have been read first
	})

	t.Run("server to client: reflected client record", func(t *testing.T) {
		// The client's own first record sent back to it, in place of the
		// server's second: another key and another direction byte.
		var mine []byte
		c, _, _ := atkRecordSession(t, alice, [2]atkRecPolicy{
			atkC2S: func(i int, rec []byte) [][]byte {
				if i == 0 {
					mine = rec
				}
				return [][]byte{rec}
			},
			atkS2C: func(i int, rec []byte) [][]byte {
				if i == 1 {
					return [][]byte{mine}
				}
				return [][]byte{rec}
			},
		})
		call := atkCallAsync(c, "ping")
		atkRecordAuthFailure(t, atkDone(t, c, "the client"), 1)
		require.Error(t, atkRecv(t, call, "the call"))
	})
}

// --- 6. reflection ----------------------------------------------------------

// TestAtkReflection: the client's own opening echoed back to it fails, as
// does its Noise message 1 reflected as a message 2, and a server's
// message 2 offered to a server as a message 1 is refused.
func TestAtkReflection(t *testing.T) {
	alice := mustKey(t)

	t.Run("client opening echoed", func(t *testing.T) {
		a, b := net.Pipe()
		echoed := make(chan struct{})
		go func() {
			defer close(echoed)
			io.Copy(b, b)
			b.Close()
		}()
		_, err := NewConn(testCtx(t), a, atkClientConfig(alice, "alice", nil))
		require.ErrorIs(t, err, ErrAuth)
		b.Close()
		<-echoed
	})

	t.Run("client message 1 reflected as message 2", func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		opened := atkNewConn(a, atkClientConfig(alice, "alice", nil))
		br := bufio.NewReader(b)
		pre := make([]byte, preambleSize)
		_, err := io.ReadFull(br, pre)
		require.NoError(t, err)
		body, err := readHandshakeMsg(br, "message 1")
		require.NoError(t, err)
		_, m1, err := splitMessage1(body)
		require.NoError(t, err)
		_, err = b.Write(appendHandshakeMsg(pre, m1))
		require.NoError(t, err)
		r := atkRecv(t, opened, "NewConn")
		require.ErrorIs(t, r.err, ErrAuth)
		require.Contains(t, r.err.Error(), "reflected")
	})

	t.Run("server message 2 as message 1", func(t *testing.T) {
		srv, n := atkServer(map[string]Key{"alice": alice}, Config{})
		defer atkStopServer(srv)
		// A real message 2 from the server, for a real message 1.
		a, b := net.Pipe()
		served := atkServeConn(srv, b)
		_, hello := atkHello(t, alice, "alice", atkRealm, nil)
		go a.Write(hello)
		br := bufio.NewReader(a)
		_, err := io.ReadFull(br, make([]byte, preambleSize))
		require.NoError(t, err)
		m2, err := readHandshakeMsg(br, "message 2")
		require.NoError(t, err)
		require.Len(t, m2, noiseDHLen+1+noiseTagLen)
		a.Close()
		require.ErrorIs(t, atkRecv(t, served, "ServeConn").err, ErrAuth)

		pre := appendPreamble(nil, modeSecure)
		refusal := append(append([]byte(nil), pre...), 0, 0)
		// As the Noise part of a message 1 for alice: refused.
		out, serr := atkExchange(t, srv, appendHandshakeMsg(pre, append([]byte{5, 'a', 'l', 'i', 'c', 'e'}, m2...)))
		require.Equal(t, refusal, out)
		require.ErrorIs(t, serr, ErrAuth)
		// As the whole body of message 1: malformed or refused.
		out, serr = atkExchange(t, srv, appendHandshakeMsg(pre, m2))
		require.True(t, bytes.Equal(out, pre) || bytes.Equal(out, refusal), "server sent % x", out)
		require.True(t, atkIsAny(serr, ErrAuth, ErrProtocol), "server: %v", serr)
		require.Zero(t, n.opens.Load())
		require.Zero(t, n.handled.Load())
	})
}

// --- 7. refusals look the same ----------------------------------------------

// TestAtkRefusalsIndistinguishable: a wrong key, a user that exists with
// another key, and an unknown user give the client the same error (but for
// the user name) and put exactly the same bytes on the wire: the server's
// preamble, 00 00, then the end of the stream.
func TestAtkRefusalsIndistinguishable(t *testing.T) {
	alice, bob, wrong := mustKey(t), mustKey(t), mustKey(t)
	users := map[string]Key{"alice": alice, "bob": bob}
	cases := []struct {
		name, user string
		key        Key
	}{
		{"wrong key", "alice", wrong},
		{"wrong user", "bob", alice},
		{"unknown user", "mallory", alice},
		{"unknown user with a known key", "carol", bob},
	}
	want := append(appendPreamble(nil, modeSecure), 0, 0)
	shape := func(err error, user string) string {
		return strings.ReplaceAll(err.Error(), strconv.Quote(user), `"USER"`)
	}
	var clientShapes, serverShapes, rawShapes []string
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, n := atkServer(users, Config{})
			defer atkStopServer(srv)

			// A real client through a man in the middle that records.
			m := atkNewMITM(t, atkNoTamper)
			served := atkServeConn(srv, m.Server)
			_, cerr := NewConn(testCtx(t), m.Client, atkClientConfig(tc.key, tc.user, nil))
			require.ErrorIs(t, cerr, ErrAuth)
			serr := atkRecv(t, served, "ServeConn").err
			require.ErrorIs(t, serr, ErrAuth)
			m.close()
			require.Equal(t, want, m.stream(atkS2C), "what the server sent")
			clientShapes = append(clientShapes, shape(cerr, tc.user))
			serverShapes = append(serverShapes, shape(serr, tc.user))

			// A client by hand, which reads until the server closes.
			_, hello := atkHello(t, tc.key, tc.user, atkRealm, nil)
			out, serr := atkExchange(t, srv, hello)
			require.Equal(t, want, out, "what the server sent before closing")
			require.ErrorIs(t, serr, ErrAuth)
			rawShapes = append(rawShapes, shape(serr, tc.user))
			require.Zero(t, n.opens.Load())
			require.Zero(t, n.handled.Load())
		})
	}
	require.Len(t, rawShapes, len(cases))
	for i := 1; i < len(cases); i++ {
		assert.Equal(t, clientShapes[0], clientShapes[i], "client error, %s vs %s", cases[0].name, cases[i].name)
		assert.Equal(t, serverShapes[0], serverShapes[i], "server error, %s vs %s", cases[0].name, cases[i].name)
		assert.Equal(t, rawShapes[0], rawShapes[i], "server error, %s vs %s", cases[0].name, cases[i].name)
	}
}

// --- 8. length fields -------------------------------------------------------

// atkAllocBytes returns the bytes f allocates per run, measured like
// testing.AllocsPerRun (one P, so other goroutines barely interfere).
func atkAllocBytes(runs int, f func()) uint64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	f()
	// The least of a few rounds: the runtime itself allocates now and then
	// (a timer, a GC worker), which would add a byte or two to one round's
	// average; f's own allocations are in every round.
	least := uint64(math.MaxUint64)
	for range 5 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range runs {
			f()
		}
		runtime.ReadMemStats(&after)
		least = min(least, (after.TotalAlloc-before.TotalAlloc)/uint64(runs))
	}
	return least
}

// TestAtkHandshakeLengths sends a real server message 1 with hostile
// lengths, and a real client message 2 likewise: each is refused with a
// protocol error at once (the server does not wait for a body it will not
// read), and the length is checked before anything is allocated.
func TestAtkHandshakeLengths(t *testing.T) {
	alice := mustKey(t)
	srv, n := atkServer(map[string]Key{"alice": alice}, Config{HandshakeTimeout: 20 * time.Second})
	defer atkStopServer(srv)
	pre := appendPreamble(nil, modeSecure)
	_, hello := atkHello(t, alice, "alice", atkRealm, nil)
	body := hello[preambleSize+2:]
	u16 := func(n int) []byte { return []byte{byte(n >> 8), byte(n)} }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	minimum := 1 + 1 + noiseDHLen + noiseTagLen // one-byte user name, empty payload

	cases := []struct {
		name    string
		input   []byte
		refusal bool   // a refusal (ErrAuth) rather than a protocol error
		msg     string // in the protocol error
	}{
		{"length 0", cat(pre, u16(0)), false, "malformed"},
		{"one byte", cat(pre, u16(1), []byte{5}), false, "malformed"},
		{"user length 0", cat(pre, u16(60), make([]byte, 60)), false, "malformed"},
		{"just under the minimum", cat(pre, u16(minimum-1), []byte{1, 'a'}, make([]byte, minimum-3)), false, "malformed"},
		{"just under the minimum for the user", cat(pre, u16(len(body)-2), body[:len(body)-2]), false, "malformed"},
		{"the minimum", cat(pre, u16(minimum), []byte{1, 'a'}, make([]byte, minimum-2)), true, ""},
		{"user name longer than the message", cat(pre, u16(len(body)), []byte{255}, body[1:]), false, "malformed"},
		{"the maximum", cat(pre, u16(maxHandshakeMsg), []byte{5}, []byte("alice"), make([]byte, maxHandshakeMsg-6)), true, ""},
		{"just above the maximum", cat(pre, u16(maxHandshakeMsg+1)), false, "more than 512"},
		{"0x8000", cat(pre, u16(0x8000)), false, "more than 512"},
		{"0xffff", cat(pre, u16(0xffff)), false, "more than 512"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, serr := atkExchange(t, srv, tc.input)
			if tc.refusal {
				require.ErrorIs(t, serr, ErrAuth)
				require.Equal(t, cat(pre, u16(0)), out)
				return
			}
			require.ErrorIs(t, serr, ErrProtocol)
			require.NotErrorIs(t, serr, ErrHandshakeTimeout, "the server waited for more")
			require.ErrorContains(t, serr, tc.msg)
			require.Equal(t, pre, out, "a malformed message 1 gets no answer")
		})
	}
	require.Zero(t, n.opens.Load())

	t.Run("message 2 to a client", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			m2    []byte
			isErr error
		}{
			{"just above the maximum", u16(maxHandshakeMsg + 1), ErrProtocol},
			{"0xffff", u16(0xffff), ErrProtocol},
			{"one byte", cat(u16(1), []byte{0}), ErrAuth},
			{"just under the minimum", cat(u16(noiseDHLen+noiseTagLen-1), make([]byte, noiseDHLen+noiseTagLen-1)), ErrAuth},
		} {
			t.Run(tc.name, func(t *testing.T) {
				a, b := net.Pipe()
				defer b.Close()
				cfg := atkClientConfig(alice, "alice", nil)
				cfg.HandshakeTimeout = 20 * time.Second
				opened := atkNewConn(a, cfg)
				br := bufio.NewReader(b)
				_, err := io.ReadFull(br, make([]byte, len(hello)))
				require.NoError(t, err)
				_, err = b.Write(cat(pre, tc.m2))
				require.NoError(t, err)
				r := atkRecv(t, opened, "NewConn")
				require.ErrorIs(t, r.err, tc.isErr)
			})
		}
	})

	t.Run("no allocation for refused lengths", func(t *testing.T) {
		for _, n := range []int{maxHandshakeMsg + 1, 0xffff} {
			per := atkAllocBytes(200, func() {
				_, err := readHandshakeMsg(bytes.NewReader(u16(n)), "message 1")
				if !errors.Is(err, ErrProtocol) {
					panic(err)
				}
			})
			assert.Less(t, per, uint64(maxHandshakeMsg), "length %d: %d bytes allocated per read", n, per)
		}
		// The measurement sees a body when one is read.
		full := cat(u16(maxHandshakeMsg), make([]byte, maxHandshakeMsg))
		per := atkAllocBytes(200, func() { readHandshakeMsg(bytes.NewReader(full), "message 1") })
		require.GreaterOrEqual(t, per, uint64(maxHandshakeMsg))
	})
}

// TestAtkRecordLengths sends a live server records with hostile lengths
// after a valid opening: the server fails with a protocol error, without
// waiting for (or allocating) a body it will not use.
func TestAtkRecordLengths(t *testing.T) {
	alice := mustKey(t)
	u32 := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	cases := []struct {
		name  string
		bytes []byte
		msg   string
	}{
		{"length 0", u32(0), "record length 0 outside 17..65553"},
		{"length 16", u32(16), "record length 16 outside"},
		{"length 17, forged", append(u32(17), make([]byte, 17)...), "record 1 failed authentication"},
		{"the maximum, forged", append(u32(maxSealedRecord), make([]byte, maxSealedRecord)...), "record 1 failed authentication"},
		{"just above the maximum", u32(maxSealedRecord + 1), "record length 65554 outside"},
		{"0x80000000", u32(0x80000000), "outside"},
		{"0xffffffff", u32(0xffffffff), "record length 4294967295 outside"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, n := atkServer(map[string]Key{"alice": alice}, Config{})
			defer atkStopServer(srv)
			a, b := net.Pipe()
			defer a.Close()
			served := atkServeConn(srv, b)
			atkRawOpen(t, a, alice, "alice")
			s := atkRecv(t, served, "ServeConn")
			require.NoError(t, s.err)
			go a.Write(tc.bytes)
			reason := atkDone(t, s.c, "the server's connection")
			require.ErrorIs(t, reason, ErrProtocol)
			require.ErrorContains(t, reason, tc.msg)
			require.Zero(t, n.handled.Load())
		})
	}

	t.Run("valid but empty records", func(t *testing.T) {
		// 17 bytes is the least a record can be: a sealed type byte. A
		// DATA record without content is refused; CLOSE is a clean end.
		key := mustKey(t)
		seal := func(n uint64, pt ...byte) []byte {
			return secretbox.Seal(u32(uint32(len(pt)+secretbox.Overhead)), pt, recordNonce(n, dirClientToServer), (*[32]byte)(&key))
		}
		rr := newRecordReader(bytes.NewReader(seal(0, recordData)), key, dirClientToServer)
		_, err := rr.Read(make([]byte, 10))
		require.ErrorIs(t, err, ErrProtocol)
		require.ErrorContains(t, err, "type 0x00 with 0 content bytes")
		rr = newRecordReader(bytes.NewReader(seal(0, recordClose)), key, dirClientToServer)
		_, err = rr.Read(make([]byte, 10))
		require.ErrorIs(t, err, io.EOF)
		rr = newRecordReader(bytes.NewReader(seal(0, recordClose, 'x')), key, dirClientToServer)
		_, err = rr.Read(make([]byte, 10))
		require.ErrorContains(t, err, "type 0x01 with 1 content bytes")
		rr = newRecordReader(bytes.NewReader(seal(0, 0x02, 'x')), key, dirClientToServer)
		_, err = rr.Read(make([]byte, 10))
		require.ErrorContains(t, err, "type 0x02")
	})

	t.Run("no allocation for refused lengths", func(t *testing.T) {
		key := mustKey(t)
		buf := make([]byte, 64)
		for _, n := range []uint32{0, 16, maxSealedRecord + 1, 0x80000000, 0xffffffff} {
			hdr := u32(n)
			per := atkAllocBytes(200, func() {
				rr := newRecordReader(bytes.NewReader(hdr), key, 0)
				if _, err := rr.Read(buf); !errors.Is(err, ErrProtocol) {
					panic(err)
				}
			})
			assert.Less(t, per, uint64(4096), "length %d: %d bytes allocated per record", n, per)
		}
		// The measurement sees the record buffer when a length is accepted.
		forged := append(u32(minSealedRecord), make([]byte, minSealedRecord)...)
		per := atkAllocBytes(50, func() {
			rr := newRecordReader(bytes.NewReader(forged), key, 0)
			rr.Read(buf)
		})
		require.GreaterOrEqual(t, per, uint64(maxSealedRecord))
	})
}

// --- 9. slow clients ----------------------------------------------------------

// atkLogErrs collects the "err" attribute of every log record.
type atkLogErrs struct {
	mu   sync.Mutex
	errs []error
}

func (h *atkLogErrs) Enabled(context.Context, slog.Level) bool { return true }
func (h *atkLogErrs) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *atkLogErrs) WithGroup(string) slog.Handler            { return h }
func (h *atkLogErrs) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && a.Key == "err" {
			h.mu.Lock()
			h.errs = append(h.errs, err)
			h.mu.Unlock()
		}
		return true
	})
	return nil
}

func (h *atkLogErrs) count(target error) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return countMatching(h.errs, target)
}

// atkSlowClient connects to addr, waits for the server's preamble (so it
// holds a handshake slot), then sends the bytes of hello one every
// interval (or nothing, if interval is 0) until the server drops it. The
// result says how many bytes it sent and whether the server closed.
type atkSlow struct {
	sent    int
	dropped bool
	err     error
}

func atkSlowClient(t testing.TB, addr string, hello []byte, interval time.Duration) <-chan atkSlow {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	pre := make([]byte, preambleSize)
	_, err = io.ReadFull(nc, pre)
	require.NoError(t, err, "the server's preamble")
	// The server started its handshake clock when it sent its preamble;
	// dropping us should take about HandshakeTimeout, and must take well
	// under the time the dribble would need (len(hello)*interval).
	nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	ch := make(chan atkSlow, 1)
	var sent atomic.Int32
	stop := make(chan struct{})
	dribbled := make(chan struct{})
	go func() {
		defer close(dribbled)
		if interval == 0 {
			return
		}
		for _, b := range hello {
			select {
			case <-stop:
				return
			case <-time.After(interval):
			}
			if _, err := nc.Write([]byte{b}); err != nil {
				return
			}
			sent.Add(1)
		}
	}()
	go func() {
		var r atkSlow
		_, err := io.Copy(io.Discard, nc) // until the server closes
		r.err = err
		// A reset (our byte crossed the server's close) is a drop too;
		// only our own deadline says the server kept us.
		r.dropped = !errors.Is(err, os.ErrDeadlineExceeded)
		close(stop)
		<-dribbled
		nc.Close()
		r.sent = int(sent.Load())
		ch <- r
	}()
	return ch
}

// TestAtkSlowloris: against a real Server with a short handshake timeout
// and two handshake slots, a silent client and one that sends a byte every
// 100 ms are both dropped at the handshake deadline, and a well-behaved
// client opens meanwhile: slow clients wait for their opening bytes
// without holding a slot (see hostile_handshake_test.go).
func TestAtkSlowloris(t *testing.T) {
	alice := mustKey(t)
	logs := &atkLogErrs{}
	srv, n := atkServer(map[string]Key{"alice": alice}, Config{
		HandshakeTimeout: 300 * time.Millisecond,
		Logger:           slog.New(logs),
	})
	srv.MaxHandshakes = 2
	ln, err := Listen("127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		atkStopServer(srv)
		require.ErrorIs(t, <-served, ErrServerClosed)
	}()
	addr := ln.Addr().String()
	_, hello := atkHello(t, alice, "alice", atkRealm, nil)

	good := func(what string) {
		t.Helper()
		cfg := atkClientConfig(alice, "alice", nil)
		cfg.HandshakeTimeout = 10 * time.Second
		c, err := Dial(testCtx(t), addr, cfg)
		require.NoError(t, err, what)
		defer c.Close()
		var out []byte
		require.NoError(t, c.Call(testCtx(t), []byte(what), &out), what)
		require.Equal(t, what, string(out))
	}

	// One slow client holds one slot: another client opens meanwhile.
	silent := atkSlowClient(t, addr, hello, 0)
	good("while a slot is free")

	// Both slots held by slow clients: a new client waits for a slot, and
	// gets one when the slow clients are dropped.
	dribbler := atkSlowClient(t, addr, hello, 100*time.Millisecond)
	time.Sleep(150 * time.Millisecond) // let the slow clients' deadlines come closer
	good("after the slow clients")

	for name, ch := range map[string]<-chan atkSlow{"silent": silent, "dribbling": dribbler} {
		r := atkRecv(t, ch, name)
		require.True(t, r.dropped, "%s client: not dropped within 3 s of its handshake starting (%v)", name, r.err)
		require.Less(t, r.sent, len(hello), "%s client got to send its whole message 1", name)
	}
	require.Eventually(t, func() bool { return logs.count(ErrHandshakeTimeout) >= 2 }, 10*time.Second, 10*time.Millisecond,
		"the server should report both slow clients as handshake timeouts")
	require.EqualValues(t, 2, n.opens.Load(), "only the two good clients opened")
}

// --- 10. nonce exhaustion ---------------------------------------------------

// atkTapConn records what is written through it.
type atkTapConn struct {
	net.Conn
	mu  sync.Mutex
	out []byte
}

func (tc *atkTapConn) Write(p []byte) (int, error) {
	n, err := tc.Conn.Write(p)
	tc.mu.Lock()
	tc.out = append(tc.out, p[:n]...)
	tc.mu.Unlock()
	return n, err
}

func (tc *atkTapConn) written() []byte {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return append([]byte(nil), tc.out...)
}

// atkSplitRecords splits a client's stream into its records, after the
// preamble and message 1.
func atkSplitRecords(t testing.TB, stream []byte) [][]byte {
	t.Helper()
	require.Greater(t, len(stream), preambleSize+2)
	rest := stream[preambleSize+2+int(binary.BigEndian.Uint16(stream[preambleSize:])):]
	var recs [][]byte
	for len(rest) > 0 {
		require.GreaterOrEqual(t, len(rest), recordLenSize)
		n := recordLenSize + int(binary.BigEndian.Uint32(rest))
		require.GreaterOrEqual(t, len(rest), n)
		recs = append(recs, rest[recordLenSize:n])
		rest = rest[n:]
	}
	return recs
}

// atkOpens reports whether sealed opens with counter n.
func atkOpens(sealed []byte, key Key, n uint64, dir byte) bool {
	_, ok := secretbox.Open(nil, sealed, recordNonce(n, dir), (*[32]byte)(&key))
	return ok
}

// atkSecurePipe opens a secure connection over net.Pipe, the client end
// wrapped as wrap says.
func atkSecurePipe(t *testing.T, key Key, wrap func(net.Conn) net.Conn) (c, s *Conn, sn *atkCounters) {
	srv, sn := atkServer(map[string]Key{"alice": key}, Config{})
	t.Cleanup(func() { atkStopServer(srv) })
	a, b := net.Pipe()
	served := atkServeConn(srv, b)
	var nc net.Conn = a
	if wrap != nil {
		nc = wrap(a)
	}
	c, err := NewConn(testCtx(t), nc, atkClientConfig(key, "alice", &atkCounters{}))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	r := atkRecv(t, served, "ServeConn")
	require.NoError(t, r.err)
	return c, r.c, sn
}

func atkCall(t testing.TB, c *Conn, msg string) error {
	var out []byte
	err := c.Call(testCtx(t), []byte(msg), &out)
	if err == nil && string(out) != msg {
		return fmt.Errorf("echo of %q came back as %q", msg, out)
	}
	return err
}

// TestAtkNonceExhaustionWriter pushes a live connection's record writer to
// the last counter it may use: that record goes out (and opens on a
// receiver at the same counter), the next send fails the connection with
// ErrNonceExhausted, and on the wire no counter is ever used twice.
func TestAtkNonceExhaustionWriter(t *testing.T) {
	alice := mustKey(t)
	var tap *atkTapConn
	c, s, sn := atkSecurePipe(t, alice, func(nc net.Conn) net.Conn { tap = &atkTapConn{Conn: nc}; return tap })
	require.NoError(t, atkCall(t, c, "a"))

	c.rw.acquire()
	key := c.rw.key
	c.rw.n = maxRecordCounter - 1
	c.rw.release()
	s.rr.n = maxRecordCounter - 1 // the server's reader waits for bytes the call below sends
	require.NoError(t, atkCall(t, c, "b"), "the last usable counter")

	err := atkCall(t, c, "c")
	require.ErrorIs(t, err, ErrNonceExhausted)
	reason := atkDone(t, c, "the client")
	require.ErrorIs(t, reason, ErrClosed)
	require.ErrorIs(t, reason, ErrNonceExhausted)
	c.rw.acquire()
	require.Equal(t, maxRecordCounter, c.rw.n, "the counter moved past its end")
	c.rw.release()
	sreason := atkDone(t, s, "the server")
	require.ErrorIs(t, sreason, ErrTruncated)
	require.Equal(t, []string{"a", "b"}, sn.seen())

	// On the wire: records with counters 0, 1, then 2^64-2, and nothing
	// after; no record opens with counter 0 but the first, and none with
	// the forbidden last counter.
	recs := atkSplitRecords(t, tap.written())
	want := []uint64{0, 1, maxRecordCounter - 1}
	require.Len(t, recs, len(want), "records sent")
	for i, r := range recs {
		require.True(t, atkOpens(r, key, want[i], dirClientToServer), "record %d with counter %d", i, want[i])
		require.Equal(t, i == 0, atkOpens(r, key, 0, dirClientToServer), "record %d opens with counter 0", i)
		require.False(t, atkOpens(r, key, maxRecordCounter, dirClientToServer), "record %d opens with counter 2^64-1", i)
	}
}

// TestAtkNonceExhaustionReader pushes a live connection's record reader to
// its end: a record sealed (by hand) with the forbidden last counter is
// refused with ErrNonceExhausted, not opened, and the counter stays at its
// end.
func TestAtkNonceExhaustionReader(t *testing.T) {
	alice := mustKey(t)
	var tap *atkTapConn
	c, s, sn := atkSecurePipe(t, alice, func(nc net.Conn) net.Conn { tap = &atkTapConn{Conn: nc}; return tap })
	require.NoError(t, atkCall(t, c, "a"))
	c.rw.acquire()
	key := c.rw.key
	c.rw.n = maxRecordCounter - 1
	c.rw.release()
	s.rr.n = maxRecordCounter - 1
	require.NoError(t, atkCall(t, c, "b"))
	// The server's reader is now at the end. A record that would open at
	// that counter: a PING, which an unchecked reader would answer.
	ping := append([]byte{recordData}, appendFrameHeader(nil, kindPing, 0, 0, 77)...)
	rec := secretbox.Seal(binary.BigEndian.AppendUint32(nil, uint32(len(ping)+secretbox.Overhead)),
		ping, recordNonce(maxRecordCounter, dirClientToServer), (*[32]byte)(&key))
	_, err := tap.Conn.Write(rec) // the client's writer is idle
	require.NoError(t, err)
	reason := atkDone(t, s, "the server")
	require.ErrorIs(t, reason, ErrNonceExhausted)
	require.Equal(t, maxRecordCounter, s.rr.n, "the reader's counter moved past its end")
	require.Equal(t, []string{"a", "b"}, sn.seen())
	atkDone(t, c, "the client")
}

// TestAtkNonceExhaustionUnits checks the record writer and reader at the
// end of their counters directly.
func TestAtkNonceExhaustionUnits(t *testing.T) {
	key := mustKey(t)
	t.Run("writer", func(t *testing.T) {
		var wire bytes.Buffer
		rw := newRecordWriter(&wire, key, dirServerToClient)
		rw.n = maxRecordCounter - 2
		for _, m := range []string{"x", "y"} {
			_, err := rw.Write([]byte(m))
			require.NoError(t, err)
			require.NoError(t, rw.Flush())
		}
		_, err := rw.Write([]byte("z"))
		require.NoError(t, err) // buffered
		require.ErrorIs(t, rw.Flush(), ErrNonceExhausted)
		require.ErrorIs(t, rw.Flush(), ErrNonceExhausted, "sticky")
		_, err = rw.Write(make([]byte, 2*maxRecordContent))
		require.ErrorIs(t, err, ErrNonceExhausted, "a write that fills a record")
		require.ErrorIs(t, rw.close(time.Time{}), ErrNonceExhausted, "not even CLOSE")
		require.Equal(t, maxRecordCounter, rw.n)
		rr := newRecordReader(bytes.NewReader(wire.Bytes()), key, dirServerToClient)
		rr.n = maxRecordCounter - 2
		got, err := io.ReadAll(rr)
		require.Equal(t, "xy", string(got), "exactly two records went out")
		require.ErrorIs(t, err, ErrTruncated)
	})
	t.Run("writer, one big write", func(t *testing.T) {
		var wire bytes.Buffer
		rw := newRecordWriter(&wire, key, dirServerToClient)
		rw.n = maxRecordCounter - 1
		_, err := rw.Write(make([]byte, 3*maxRecordContent))
		require.ErrorIs(t, err, ErrNonceExhausted)
		require.NoError(t, rw.writeOutLocked()) // what was sealed before the failure
		require.Equal(t, recordLenSize+maxSealedRecord, wire.Len(), "one full record, no more")
	})
	t.Run("reader", func(t *testing.T) {
		var wire bytes.Buffer
		rw := newRecordWriter(&wire, key, dirClientToServer)
		rw.n = maxRecordCounter - 1
		_, err := rw.Write([]byte("last"))
		require.NoError(t, err)
		require.NoError(t, rw.Flush())
		// What a writer whose counter wrapped would send next: counter 0.
		rw.n = 0
		_, err = rw.Write([]byte("wrapped"))
		require.NoError(t, err)
		require.NoError(t, rw.Flush())
		rr := newRecordReader(bytes.NewReader(wire.Bytes()), key, dirClientToServer)
		rr.n = maxRecordCounter - 1
		got, err := io.ReadAll(rr)
		require.Equal(t, "last", string(got))
		require.ErrorIs(t, err, ErrNonceExhausted)
		require.Equal(t, maxRecordCounter, rr.n)
	})
}

// --- 11. concurrency ----------------------------------------------------------

// TestAtkConcurrentMixedSizes runs 64 goroutines calling at once over one
// secure TCP connection with small and large (>64 KiB, many-record)
// messages, while the server calls back the other way: every reply is
// exactly what was sent.
func TestAtkConcurrentMixedSizes(t *testing.T) {
	alice := mustKey(t)
	srv, _ := atkServer(map[string]Key{"alice": alice}, Config{})
	c, s := tcpPair(t, atkClientConfig(alice, "alice", &atkCounters{}), srv)
	sizes := []int{0, 1, 100, 4 << 10, 64<<10 - 1, 64 << 10, 64<<10 + 1, 150 << 10, 300 << 10}
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	run := func(conn *Conn, g, calls int) {
		defer wg.Done()
		for i := range calls {
			size := sizes[(g+i)%len(sizes)]
			msg := make([]byte, size)
			for j := range msg {
				msg[j] = byte(g*31 + i*7 + j)
			}
			var out []byte
			if err := conn.Call(ctx, msg, &out); err != nil {
				errs <- fmt.Errorf("goroutine %d call %d (%d bytes): %w", g, i, size, err)
				return
			}
			if !bytes.Equal(msg, out) {
				errs <- fmt.Errorf("goroutine %d call %d (%d bytes): wrong reply of %d bytes", g, i, size, len(out))
				return
			}
		}
	}
	for g := range 64 {
		wg.Add(1)
		go run(c, g, 4)
	}
	for g := range 8 {
		wg.Add(1)
		go run(s, 100+g, 3)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	require.NoError(t, c.Err())
	require.NoError(t, s.Err())
}

// --- 13. fresh keys -------------------------------------------------------

// TestAtkFreshSessionKeys opens several connections with the same key: the
// two ends of each agree on the transport keys, the two directions' keys
// differ, and no key and no handshake message repeats across connections.
func TestAtkFreshSessionKeys(t *testing.T) {
	alice := mustKey(t)
	srv, _ := atkServer(map[string]Key{"alice": alice}, Config{})
	defer atkStopServer(srv)
	seenKey := map[Key]string{}
	seenMsg := map[string]string{}
	for i := range 5 {
		m := atkNewMITM(t, atkNoTamper)
		served := atkServeConn(srv, m.Server)
		c, err := NewConn(testCtx(t), m.Client, atkClientConfig(alice, "alice", nil))
		require.NoError(t, err)
		s := atkRecv(t, served, "ServeConn")
		require.NoError(t, s.err)

		c.rw.acquire()
		cSend := c.rw.key
		c.rw.release()
		s.c.rw.acquire()
		sSend := s.c.rw.key
		s.c.rw.release()
		cRecv, sRecv := c.rr.key, s.c.rr.key
		require.Equal(t, cSend, sRecv, "connection %d: client-to-server keys", i)
		require.Equal(t, sSend, cRecv, "connection %d: server-to-client keys", i)
		require.NotEqual(t, cSend, sSend, "connection %d: both directions share a key", i)
		require.NotEqual(t, Key{}, cSend)
		require.NotEqual(t, alice, cSend)
		for dir, k := range map[string]Key{"c2s": cSend, "s2c": sSend} {
			name := fmt.Sprintf("connection %d %s", i, dir)
			require.NotContains(t, seenKey, k, "%s repeats the key of %s", name, seenKey[k])
			seenKey[k] = name
		}
		for dir := range 2 {
			st := m.stream(dir)
			msg := string(st[preambleSize : preambleSize+2+int(binary.BigEndian.Uint16(st[preambleSize:]))])
			name := fmt.Sprintf("connection %d %s", i, atkDirName[dir])
			require.NotContains(t, seenMsg, msg, "%s repeats the handshake message of %s", name, seenMsg[msg])
			seenMsg[msg] = name
		}
		c.Close()
		atkDone(t, s.c, "the server's connection")
		m.close()
	}
}

// --- net.Pipe, both ways ------------------------------------------------------

// TestAtkSecurePipeBothWays opens a secure connection over net.Pipe with
// NewConn and Server.ServeConn, and calls both ways.
func TestAtkSecurePipeBothWays(t *testing.T) {
	alice := mustKey(t)
	c, s, sn := atkSecurePipe(t, alice, nil)
	require.Equal(t, "alice", c.User())
	require.Equal(t, "alice", s.User())
	require.NoError(t, atkCall(t, c, "to the server"))
	require.NoError(t, atkCall(t, s, "to the client"))
	big := strings.Repeat("0123456789abcdef", 20000) // 320 KB: several records
	require.NoError(t, atkCall(t, c, big))
	require.NoError(t, atkCall(t, s, big))
	require.EqualValues(t, 1, sn.opens.Load())
	require.Equal(t, []string{"to the server", big}, sn.seen())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.Shutdown(ctx))
	require.ErrorIs(t, atkDone(t, s, "the server"), ErrShutdown)
}
