package bokboknet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// Conn is one OCapN session's byte stream over a secure bokbok connection:
// a net.Conn whose writes travel as notifications of method Method and
// whose reads return the peer's, in order. Netlayer.Dial and
// Netlayer.Accept return them. It is safe for concurrent use: Read, Write,
// the deadline setters and Close may be called from different goroutines,
// and a deadline or Close applies to a Read or Write already waiting.
//
// Reads come from a buffer of Config.ReceiveBuffer bytes; while it is
// full, the peer's writes wait (bokbok's flow control), so a reader that
// falls behind slows the writer down and memory stays bounded. Write
// returns once its bytes are queued for sending; Close sends what is
// queued before it closes the connection (within Config.CloseTimeout).
//
// Errors are *net.OpError values, as the net package's are: an expired
// deadline's matches os.ErrDeadlineExceeded and has Timeout() true, and
// one on a Conn closed by Close matches net.ErrClosed. Read returns io.EOF
// once the peer has closed the connection and every byte it sent has
// been read; if the connection was cut instead, the error wraps bokbok's
// reason (which matches bokbok.ErrClosed).
type Conn struct {
	bc           *bokbok.Conn // set before the Conn is handed out
	peer         string       // the peer's designator, as authenticated
	bufSize      int
	closeTimeout time.Duration

	ctx    context.Context // cancelled, with cause net.ErrClosed, by Close
	cancel context.CancelCauseFunc
	done   chan struct{} // closed by Close
	once   sync.Once

	rd, wd deadline

	readMu sync.Mutex // serializes Read; guards hello
	hello  helloCheck

	writeMu sync.Mutex // serializes Write, so one Write's chunks are not interleaved with another's

	mu       sync.Mutex // guards the fields below
	buf      []byte     // the receive ring; allocated with the first bytes
	head, n  int        // the unread bytes are buf[head:head+n], wrapping
	closed   bool       // Close was called
	ended    bool       // the bokbok connection has closed
	reason   error      // why, once ended
	fault    error      // the peer broke this netlayer's rules; the connection is closed
	readable chan struct{}
	writable chan struct{}
}

// helloCheck is the state of an accepted Conn's check of the dialer's
// first message (see checkHello).
type helloCheck struct {
	pending bool   // an accepted Conn whose first message is not checked yet
	got     []byte // the octets read while checking, kept for a retry after a timeout
	replay  []byte // once checked: the octets to return before the ring's
	err     error  // the check failed: every Read returns it
}

// helloLimits bound the dialer's op:start-session, which is read before
// the OCapN session sees the connection; maxHello bounds what is read
// while decoding it (the decoder reads ahead).
var helloLimits = syrup.Limits{MaxDepth: 32, MaxBytes: 16 << 10, MaxValues: 1024}

const maxHello = 2 * (16 << 10)

func newConn(peer string, inbound bool, bufSize int, closeTimeout time.Duration) *Conn {
	c := &Conn{
		peer:         peer,
		bufSize:      bufSize,
		closeTimeout: closeTimeout,
		done:         make(chan struct{}),
		readable:     make(chan struct{}, 1),
		writable:     make(chan struct{}, 1),
	}
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	c.rd.init(c.ctx)
	c.wd.init(c.ctx)
	c.hello.pending = inbound
	return c
}

// PeerDesignator returns the designator of the node at the other end, as
// the handshake authenticated it: for a dialed Conn, the designator
// dialed (the peer proved it knows the key for it); for an accepted one,
// the user name the dialer proved it holds a key for, which its first
// message must claim as its location's designator.
func (c *Conn) PeerDesignator() string { return c.peer }

// LocalAddr returns this side's network address.
func (c *Conn) LocalAddr() net.Addr { return c.bc.LocalAddr() }

// RemoteAddr returns the peer's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.bc.RemoteAddr() }

// SetDeadline sets the read and write deadlines; see net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	c.rd.set(t)
	c.wd.set(t)
	return nil
}

// SetReadDeadline sets the deadline for Read calls, including one already
// waiting; the zero time means none.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.rd.set(t)
	return nil
}

// SetWriteDeadline sets the deadline for Write calls, including one
// already waiting for the peer to make room; the zero time means none.
// A Write that times out may have sent part of its bytes: it returns how
// many.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.wd.set(t)
	return nil
}

// Write sends b to the peer in notifications of at most MaxChunk bytes
// each. It returns once they are all queued for sending, waiting while the
// peer's receive buffer and bokbok's window are full; if the deadline
// passes, Close is called or the connection fails first, it returns the
// number of bytes queued and an error. It does not keep b.
func (c *Conn) Write(b []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	written := 0
	for {
		ctx := c.wd.context()
		if c.isClosed() {
			return written, c.opError("write", net.ErrClosed)
		}
		if ctx.Err() != nil {
			return written, c.opError("write", os.ErrDeadlineExceeded)
		}
		if written == len(b) {
			return written, nil
		}
		k := min(len(b)-written, MaxChunk)
		if err := c.bc.NotifyMethod(ctx, Method, b[written:written+k]); err != nil {
			switch {
			case c.isClosed():
				err = net.ErrClosed
			case ctx.Err() != nil && errors.Is(context.Cause(ctx), os.ErrDeadlineExceeded):
				err = os.ErrDeadlineExceeded
			}
			return written, c.opError("write", err)
		}
		written += k
	}
}

// Read reads the peer's bytes, in the order it wrote them, waiting until
// some arrive, the deadline passes, Close is called or the connection
// ends.
func (c *Conn) Read(b []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if c.hello.err != nil {
		return 0, c.hello.err
	}
	if c.hello.pending {
		if err := c.checkHello(); err != nil {
			return 0, err
		}
	}
	if len(c.hello.replay) > 0 {
		if c.isClosed() {
			return 0, c.opError("read", net.ErrClosed)
		}
		if c.rd.context().Err() != nil {
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		}
		n := copy(b, c.hello.replay)
		c.hello.replay = c.hello.replay[n:]
		if len(c.hello.replay) == 0 {
			c.hello.replay = nil
		}
		return n, nil
	}
	return c.readRing(b)
}

// readRing reads from the receive ring.
func (c *Conn) readRing(b []byte) (int, error) {
	for {
		dl := c.rd.context()
		c.mu.Lock()
		switch {
		case c.closed:
			c.mu.Unlock()
			return 0, c.opError("read", net.ErrClosed)
		case dl.Err() != nil:
			c.mu.Unlock()
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		case len(b) == 0:
			c.mu.Unlock()
			return 0, nil
		case c.n > 0:
			k := c.take(b)
			c.mu.Unlock()
			signal(c.writable)
			return k, nil
		case c.fault != nil:
			err := c.fault
			c.mu.Unlock()
			return 0, c.opError("read", err)
		case c.ended:
			reason := c.reason
			c.mu.Unlock()
			if reason == nil || errors.Is(reason, io.EOF) || errors.Is(reason, bokbok.ErrShutdown) {
				return 0, io.EOF // the peer closed: a clean end of the stream
			}
			return 0, c.opError("read", fmt.Errorf("bokboknet: connection lost: %w", reason))
		}
		c.mu.Unlock()
		select {
		case <-c.readable:
		case <-dl.Done():
		case <-c.done:
		}
	}
}

// take moves unread bytes into b. c.mu must be held and c.n > 0.
func (c *Conn) take(b []byte) int {
	k := copy(b, c.buf[c.head:min(c.head+c.n, len(c.buf))])
	if k < len(b) && k < c.n {
		k += copy(b[k:], c.buf[:c.n-k])
	}
	c.head = (c.head + k) % len(c.buf)
	c.n -= k
	if c.n == 0 {
		c.head = 0
	}
	return k
}

// put moves as much of p into the ring as fits. c.mu must be held.
func (c *Conn) put(p []byte) int {
	tail := (c.head + c.n) % len(c.buf)
	free := len(c.buf) - c.n
	k := copy(c.buf[tail:min(tail+free, len(c.buf))], p)
	if k < len(p) && k < free {
		k += copy(c.buf[:free-k], p[k:])
	}
	c.n += k
	return k
}

// signal wakes the goroutine waiting on ch, if any (there is at most
// one: the notification handler for writable, the Read holding readMu for
// readable).
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// serve is the bokbok Handler of the connection: it takes the peer's
// chunks into the ring, waiting while it is full, and refuses anything
// else.
func (c *Conn) serve(ctx context.Context, req *bokbok.Request) (any, error) {
	if !req.IsNotification() {
		return nil, &bokbok.RemoteError{Code: bokbok.CodeNoMethod,
			Message: fmt.Sprintf("bokboknet: this connection carries OCapN bytes as %q notifications only", Method)}
	}
	if req.Method() != Method {
		return nil, c.violation(req.Conn(), fmt.Errorf("bokboknet: the peer sent a notification of method %q (only %q is allowed)", req.Method(), Method))
	}
	var ch chunk // refers to the message's buffer until we return: copied below
	if err := req.Decode(&ch); err != nil || !ch.bin {
		if err == nil {
			err = errors.New("MessagePack nil")
		}
		return nil, c.violation(req.Conn(), fmt.Errorf("bokboknet: the peer sent a chunk that is not a MessagePack bin: %w", err))
	}
	if len(ch.b) > MaxChunk {
		return nil, c.violation(req.Conn(), fmt.Errorf("bokboknet: the peer sent a chunk of %d bytes (at most %d are allowed)", len(ch.b), MaxChunk))
	}
	c.deliver(ctx, ch.b)
	return nil, nil
}

// chunk decodes a notification's payload: a MessagePack bin and nothing
// else (not a str, not nil), without copying it. bin records that one was
// decoded (msgpack decodes a nil without calling DecodeMsgpack).
type chunk struct {
	b   bokbok.Bulk
	bin bool
}

func (ch *chunk) DecodeMsgpack(d *msgpack.Decoder) error {
	code, err := d.PeekCode()
	if err != nil {
		return err
	}
	if code != msgpcode.Bin8 && code != msgpcode.Bin16 && code != msgpcode.Bin32 {
		return fmt.Errorf("MessagePack code 0x%02x", code)
	}
	ch.bin = true
	return ch.b.DecodeMsgpack(d)
}

// deliver copies p into the ring, waiting for room. It gives up when the
// connection closes (ctx) or the Conn is closed, dropping the rest.
func (c *Conn) deliver(ctx context.Context, p []byte) {
	for len(p) > 0 {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return
		}
		if c.buf == nil {
			c.buf = make([]byte, c.bufSize)
		}
		if c.n < len(c.buf) {
			k := c.put(p)
			p = p[k:]
			c.mu.Unlock()
			signal(c.readable)
			continue
		}
		c.mu.Unlock()
		select {
		case <-c.writable:
		case <-ctx.Done():
			return
		case <-c.done:
			return
		}
	}
}

// violation records that the peer broke this netlayer's rules and closes
// the connection; reads return err once the bytes before it are read.
func (c *Conn) violation(bc *bokbok.Conn, err error) error {
	c.mu.Lock()
	if c.fault == nil {
		c.fault = err
	}
	c.mu.Unlock()
	signal(c.readable)
	bc.Close() // from the notification goroutine: Close does not wait for it
	return err
}

// onClose records that the bokbok connection has closed (from its
// OnClose, after every notification has been handled).
func (c *Conn) onClose(reason error) {
	c.mu.Lock()
	c.ended, c.reason = true, reason
	c.mu.Unlock()
	signal(c.readable)
}

// checkHello reads the dialer's first message on an accepted Conn and
// checks that it is an op:start-session whose location is on this
// transport with the designator the dialer authenticated as. The octets
// read are returned by Read afterwards, so the OCapN session reads the
// message itself. A timeout or a close while reading leaves the check
// pending (the octets read so far are kept); any other failure closes the
// connection.
func (c *Conn) checkHello() error {
	r := &helloReader{c: c}
	v, err := syrup.NewDecoder(r, helloLimits).Decode()
	if err != nil && r.err != nil && err == r.err {
		switch {
		case err == io.EOF && len(c.hello.got) == 0:
			return io.EOF
		case err == io.EOF:
			c.hello.err = c.opError("read", io.ErrUnexpectedEOF)
			return c.hello.err
		}
		return err // a timeout or a close: nothing is lost, the check goes on at the next Read
	}
	if err == io.ErrUnexpectedEOF { // the stream ended within the message
		c.hello.err = c.opError("read", err)
		return c.hello.err
	}
	if err == nil {
		err = checkStartSession(v, c.peer)
	} else {
		err = fmt.Errorf("bokboknet: the dialer's first message is not a Syrup value within bounds: %w", err)
	}
	if err != nil {
		c.hello.err = c.opError("read", err)
		c.mu.Lock()
		if c.fault == nil {
			c.fault = err
		}
		c.mu.Unlock()
		c.bc.Close()
		return c.hello.err
	}
	c.hello.pending = false
	c.hello.replay, c.hello.got = c.hello.got, nil
	return nil
}

// helloReader feeds checkHello's decoder: first the octets an earlier
// attempt read, then the ring's, keeping a copy of everything.
type helloReader struct {
	c   *Conn
	pos int
	err error // the ring's error, if reading it failed
}

func (r *helloReader) Read(p []byte) (int, error) {
	h := &r.c.hello
	if r.pos < len(h.got) {
		n := copy(p, h.got[r.pos:])
		r.pos += n
		return n, nil
	}
	if len(h.got) >= maxHello {
		return 0, fmt.Errorf("more than %d bytes read", maxHello)
	}
	p = p[:min(len(p), maxHello-len(h.got))]
	n, err := r.c.readRing(p)
	h.got = append(h.got, p[:n]...)
	r.pos += n
	if err != nil {
		r.err = err
	}
	return n, err
}

// checkStartSession checks that v is <op:start-session version key
// <ocapn-peer 'bokbok designator hints> signature> with the designator
// want. The OCapN session checks the rest.
func checkStartSession(v any, want string) error {
	r, ok := v.(syrup.Record)
	if !ok || r.Label != syrup.Symbol("op:start-session") || len(r.Fields) != 4 {
		return errors.New("bokboknet: the dialer's first message is not an op:start-session")
	}
	loc, ok := r.Fields[2].(syrup.Record)
	if !ok || loc.Label != syrup.Symbol("ocapn-peer") || len(loc.Fields) != 3 {
		return errors.New("bokboknet: the dialer's op:start-session has no <ocapn-peer> location")
	}
	if t, ok := loc.Fields[0].(syrup.Symbol); !ok || string(t) != Transport {
		return fmt.Errorf("bokboknet: the dialer's location is not on transport %q", Transport)
	}
	var got string
	switch d := loc.Fields[1].(type) {
	case string:
		got = d
	case syrup.Symbol:
		got = string(d)
	default:
		return errors.New("bokboknet: the dialer's location has no designator")
	}
	if got != want {
		return fmt.Errorf("bokboknet: the dialer authenticated as %q but claims the designator %q", want, got)
	}
	return nil
}

// Close closes the Conn: waiting Reads and Writes return at once with
// errors matching net.ErrClosed, and the bokbok connection is shut down
// gracefully, so that the bytes already written reach the peer, within
// Config.CloseTimeout; then it is closed. Close returns when it is.
// Closing a closed Conn returns an error matching net.ErrClosed.
func (c *Conn) Close() error { return c.close(c.closeTimeout) }

// close closes the Conn, shutting the bokbok connection down within
// timeout; 0 closes it at once.
func (c *Conn) close(timeout time.Duration) error {
	first := false
	c.once.Do(func() {
		first = true
		c.mu.Lock()
		c.closed = true
		c.buf, c.head, c.n = nil, 0, 0
		c.mu.Unlock()
		close(c.done)
		c.cancel(net.ErrClosed)
		c.rd.stop()
		c.wd.stop()
		if timeout <= 0 {
			c.bc.Close()
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c.bc.Shutdown(ctx) // closes the connection in any case; work it cut short is the peer's loss, as on a socket
	})
	if !first {
		return c.opError("close", net.ErrClosed)
	}
	return nil
}

func (c *Conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: Transport, Source: c.bc.LocalAddr(), Addr: c.bc.RemoteAddr(), Err: err}
}

// deadline is one direction's deadline as a context that is cancelled,
// with cause os.ErrDeadlineExceeded, when it passes (or, with the parent,
// when the Conn is closed). Moving a deadline that has not passed keeps
// the context, so that a Read or Write already waiting on it sees the new
// one; once one has passed, setting another makes a fresh context.
type deadline struct {
	mu     sync.Mutex
	parent context.Context
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
}

func (d *deadline) init(parent context.Context) {
	d.parent = parent
	d.ctx, d.cancel = context.WithCancelCause(parent)
}

func (d *deadline) context() context.Context {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ctx
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		if !d.timer.Stop() { // it fired, or is firing: the deadline has passed
			d.cancel(os.ErrDeadlineExceeded)
		}
		d.timer = nil
	}
	if d.parent.Err() != nil {
		return // closed
	}
	if d.ctx.Err() != nil {
		d.ctx, d.cancel = context.WithCancelCause(d.parent)
	}
	if t.IsZero() {
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		d.cancel(os.ErrDeadlineExceeded)
		return
	}
	cancel := d.cancel
	d.timer = time.AfterFunc(wait, func() { cancel(os.ErrDeadlineExceeded) })
}

// stop stops the timer; the Conn is closed.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}
