package bokbok

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Conn is one bokbok connection. Either side may send requests and
// notifications on it at any time, from any number of goroutines, and each
// side's Handler serves the other's. A Conn is safe for concurrent use.
//
// A Conn owns goroutines of its own: the reader, which reads frames and
// hands them on without ever waiting for application code; the writer,
// the only one that writes, which runs only while
// there is something to write; while there are notifications to deliver,
// the notifier, which runs them in order; and the handler goroutines, one
// per request running, each of which lingers briefly for the next request
// before it ends. All of them end when the connection closes (a handler
// ends when it returns: its context is cancelled then).
type Conn struct {
	nc      net.Conn
	cfg     *Config
	log     *slog.Logger
	user    string
	peer    settings      // the peer's SETTINGS; read-only after the handshake
	br      *bufio.Reader // the opening's reader; nil once cr has taken over
	cr      *connReader   // the open connection's reader (TCP and Unix sockets); only the reader goroutine touches it
	fr      frameReader
	rw      *recordWriter // secure mode: the record writer
	frames  []dataFrame   // the writer goroutine's scratch; only it touches this
	reserve reservation   // assembly reservation budget left (see assembly); only the reader touches this
	rr      *recordReader // secure mode: the record reader (also fr.r)
	sendq   *sendQueue

	// notifySem is held (a token in it) by the Notify that is choosing its
	// id and queueing its message, so notifications are queued in the
	// order they take credit, and credits can be matched to their sizes.
	notifySem chan struct{}

	// ctx is cancelled when the connection starts closing; handler
	// contexts derive from it.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed once closed: calls failed, reader and writer stopped
	loops  sync.WaitGroup
	work   sync.WaitGroup // handler and notifier goroutines

	running    atomic.Bool  // set once start has run
	lastRecv   atomic.Int64 // monotonic nanoseconds (since epoch) of the last inbound frame
	epoch      time.Time
	kaPing     time.Duration  // since epoch, when our last keepalive PING went out; only the keepalive timer's runs (which never overlap) touch it
	ready      chan struct{}  // closed when handlers may run (after the server's OnOpen)
	goingAway  chan struct{}  // closed when a graceful shutdown begins, from either side, or the connection closes
	afterClose func()         // set before start; run by the closer last (the server's bookkeeping)
	intercept  CallFunc       // Config.Interceptors chained, ending in the send; nil without interceptors; read-only
	methods    methodInterner // method names received; only the reader touches this

	mu          sync.Mutex // guards the fields below
	err         error      // why the connection closed; nil while open
	pending     map[uint32]*call
	nextID      uint32
	pings       map[uint32]chan error // Ping waiters by PING id
	pingSeq     uint32
	goAwayRecv  bool          // the peer promised to send no new requests
	drained     chan struct{} // non-nil during Shutdown: signalled when work finishes
	notifyLimit int           // notifications we may still send before the peer credits more
	notifyOut   int64         // bytes of our notifications the peer has not credited back
	notifySizes []int64       // their sizes, in the order they were sent
	creditWait  chan struct{} // closed when credit arrives; made by the first waiter (nil while nobody waits)
	ka          *time.Timer   // keepalive timer; nil if disabled
	abandoned   int           // calls whose caller gave up after they started, still awaiting an answer
	awayClosed  bool          // goingAway is closed
	lostOut     int           // set when closing: our requests unanswered, notifications uncredited
	lostIn      int           // set when closing: the peer's requests and notifications unfinished

	in inbound // the peer's requests and notifications; has its own lock
}

// frameSink is what the writer goroutine writes frames to.
type frameSink interface {
	io.Writer
	Flush() error
}

func newConn(nc net.Conn, cfg *Config, user string) *Conn {
	tuneConn(nc)
	if tc, ok := nc.(*net.TCPConn); ok && cfg.SocketReceiveBuffer > 0 {
		tc.SetReadBuffer(cfg.SocketReceiveBuffer) // best effort, like tuneConn
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Conn{
		nc:        nc,
		cfg:       cfg,
		log:       cfg.Logger,
		user:      user,
		br:        newOpeningReader(nc),
		ctx:       ctx,
		cancel:    cancel,
		done:      make(chan struct{}),
		ready:     make(chan struct{}),
		goingAway: make(chan struct{}),
		notifySem: make(chan struct{}, 1),
		pending:   make(map[uint32]*call),
		epoch:     time.Now(),
	}
	c.fr.r = c.br
	c.fr.dest = c.payloadDest
	c.reserve.left = reserveBudget
	c.sendq = newSendQueue(cfg.SendQueueBytes, c.writeLoop, &c.loops)
	c.sendq.overflow = c.fail
	c.sendq.busy = c.manyInFlight
	c.sendq.answered = c.in.answerQueued
	c.in.init(c)
	c.intercept = chainInterceptors(c, cfg.Interceptors)
	return c
}

// start launches the connection's goroutines after a successful handshake.
func (c *Conn) start() {
	c.notifyLimit = int(c.peer.NotifyWindow)
	c.running.Store(true)
	c.touch()
	if raw := rawConnOf(c.nc); raw != nil {
		c.takeOverReads(raw)
		c.sendq.setDirect(newDirectWriter(raw, c.rw))
	}
	c.loops.Add(1)
	go c.readLoop() // the writer starts when there is something to write
	c.startKeepalive()
	c.log.Debug("bokbok: connection open", "remote", c.nc.RemoteAddr(), "user", c.user)
	c.connStats(false, nil)
}

// takeOverReads moves the connection's reads from the opening's buffered
// reader to a connReader reading raw.
func (c *Conn) takeOverReads(raw syscall.RawConn) {
	cr := newConnReader(c.nc, raw, c.br)
	c.cr, c.br = cr, nil
	if c.rr != nil {
		c.rr.r = cr
	} else {
		c.fr.r = cr
	}
}

// User returns the user name the connection was authenticated as, or ""
// for an insecure connection.
func (c *Conn) User() string { return c.user }

// RemoteAddr returns the peer's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// LocalAddr returns this side's network address.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// Done returns a channel that is closed when the connection has closed:
// every pending call has failed and the reader and writer have stopped.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Draining returns a channel that is closed once a graceful shutdown has
// begun, by either side (this side's Shutdown, or the peer's), or the
// connection has closed. Handlers that wait long for something (long
// polls, watches) can select on it to finish early with what they have,
// so that a graceful shutdown does not wait for them until its deadline.
func (c *Conn) Draining() <-chan struct{} { return c.goingAway }

// beginDraining closes the Draining channel, once.
func (c *Conn) beginDraining() {
	c.mu.Lock()
	if !c.awayClosed {
		c.awayClosed = true
		close(c.goingAway)
	}
	c.mu.Unlock()
}

// Err returns nil while the connection is open and, once it is closing,
// the reason: an error matching ErrClosed that wraps the cause.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection at once: pending calls fail with ErrClosed,
// running handlers see their context cancelled, queued writes are dropped.
// It waits until the reader and writer have stopped. Closing a closed
// connection does nothing. Use Shutdown to let work in flight finish.
func (c *Conn) Close() error {
	c.fail(nil)
	<-c.done
	return nil
}

// fail starts closing the connection with cause (nil for a local Close).
// The first call wins; later calls do nothing. It never blocks on I/O.
func (c *Conn) fail(cause error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = closedError(cause)
	pending := c.pending
	c.pending = nil
	if c.started() {
		c.lostOut = len(pending) - c.abandoned + int(c.peer.NotifyWindow) - c.notifyLimit
	}
	if !c.awayClosed {
		c.awayClosed = true
		close(c.goingAway)
	}
	for _, ch := range c.pings {
		ch <- c.err
	}
	c.pings = nil
	if c.creditWait != nil {
		close(c.creditWait)
		c.creditWait = nil
	}

	if c.ka != nil {
		c.ka.Stop()
	}
	c.mu.Unlock()

	c.sendq.close(c.err) // first: handlers that see the cancel below send nothing more
	lostIn := c.sendq.droppedAnswers() + c.in.unfinished()
	c.mu.Lock()
	c.lostIn = lostIn
	c.mu.Unlock()
	c.cancel()
	if c.rw != nil && c.started() && (cause == nil || errors.Is(cause, io.EOF) || errors.Is(cause, ErrShutdown)) {
		// A deliberate close of a secure connection (ours, or in answer to
		// the peer's CLOSE): tell the peer it is a close, not a cut, if the
		// writer is not in the middle of a write.
		c.rw.close(time.Now().Add(closeRecordTimeout))
	}
	c.nc.Close() // unblocks the reader and the writer
	for _, cl := range pending {
		err := c.err
		if !c.sendq.started(cl.out) { // the queue is closed: it never will be
			err = notSent(err)
		}
		cl.finish(nil, nil, nil, err)
	}
	level := slog.LevelDebug
	if cause != nil && !errors.Is(cause, io.EOF) && !errors.Is(cause, ErrShutdown) && !errors.Is(cause, errPeerGone) {
		level = slog.LevelWarn
	}
	c.log.Log(context.Background(), level, "bokbok: connection closing", "remote", c.nc.RemoteAddr(), "reason", c.err)
}

// closeRecordTimeout bounds the write of the CLOSE record when a secure
// connection is closed at once.
const closeRecordTimeout = 100 * time.Millisecond

// closer runs on the reader goroutine after it stops: it waits for the
// writer, marks the connection done, then waits for handlers and runs
// OnClose.
func (c *Conn) closer() {
	c.loops.Wait()
	if c.rw != nil { // the reader and writer are done with the keys
		c.rw.wipe()
		c.rr.wipe()
	}
	close(c.done)
	c.work.Wait()
	c.connStats(true, c.Err())
	if c.cfg.OnClose != nil {
		c.cfg.OnClose(c, c.Err())
	}
	if c.afterClose != nil {
		c.afterClose()
	}
}

// Shutdown closes the connection gracefully: it tells the peer to send no
// new requests (and sends none itself: new calls fail with ErrShutdown),
// waits until the requests in flight both ways have been answered, the
// peer has sent its own promise, and queued notifications have run, then
// writes out everything queued, half-closes the connection where the
// network allows it (so nothing the peer has not read yet is lost to a
// reset), and closes once the peer has closed too.
//
// Shutdown returns nil only if all that work was finished. If the
// connection closed first (ctx ended, or the peer or a Close cut it)
// with requests unanswered or notifications unhandled, it returns a
// *ShutdownError that counts them and matches ErrUnfinished; when ctx
// ended first, the error also matches ctx's error. A connection that
// was already closed when Shutdown was called gives nil.
func (c *Conn) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		<-c.done
		return nil
	}
	if c.drained == nil {
		c.drained = make(chan struct{}, 1)
	}
	c.mu.Unlock()
	c.beginDraining()
	c.sendq.pushGoAway()
	err := c.drain(ctx)
	if err == nil {
		err = c.sendq.waitIdle(ctx, c.done)
	}
	if err == nil {
		c.sendq.close(closedError(ErrShutdown))
		if c.rw != nil {
			d, ok := ctx.Deadline()
			if !ok {
				d = time.Now().Add(c.cfg.HandshakeTimeout) // some bound on a write to a peer that stopped reading
			}
			err = c.rw.close(d)
		}
	}
	if err == nil {
		if cw, ok := c.nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			select {
			case <-c.done: // the peer saw our end and closed its own
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
	}
	c.fail(ErrShutdown)
	<-c.done
	return c.shutdownResult(err)
}

// shutdownResult is what Shutdown returns once the connection is closed,
// given the error that ended its wait (nil, ctx's error, or one matching
// ErrClosed when the connection closed meanwhile).
func (c *Conn) shutdownResult(err error) error {
	c.mu.Lock()
	out, in, reason := c.lostOut, c.lostIn, c.err
	c.mu.Unlock()
	if out == 0 && in == 0 {
		if errors.Is(err, ErrClosed) {
			return nil // closed meanwhile, with nothing in flight
		}
		return err
	}
	cause := reason
	if err != nil && !errors.Is(err, ErrClosed) {
		cause = err // ctx's error, or a failed CLOSE record
	}
	return &ShutdownError{Outgoing: out, Incoming: in, Cause: cause}
}

// drain waits until a graceful shutdown may close the connection.
func (c *Conn) drain(ctx context.Context) error {
	for !c.isDrained() {
		select {
		case <-c.drained:
		case <-c.done:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// isDrained reports whether a graceful shutdown may close the connection:
// the peer has promised to send nothing new, every request has been
// answered both ways, and every notification has been handled both ways
// (ours: the peer has credited them all back).
func (c *Conn) isDrained() bool {
	c.mu.Lock()
	ok := c.goAwayRecv && len(c.pending) == 0 && c.notifyLimit == int(c.peer.NotifyWindow)
	c.mu.Unlock()
	return ok && c.in.idle()
}

// workDone wakes a waiting Shutdown; called whenever a call is answered
// or a handler finishes.
func (c *Conn) workDone() {
	c.mu.Lock()
	ch := c.drained
	c.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// onGoAway handles the peer's GOAWAY: no new requests from either side.
func (c *Conn) onGoAway() {
	c.mu.Lock()
	c.goAwayRecv = true
	c.mu.Unlock()
	c.beginDraining()
	c.sendq.pushGoAway() // our promise in return, unless we made it already
	c.workDone()
}

// started reports whether the handshake succeeded and the connection runs.
func (c *Conn) started() bool { return c.running.Load() }

func (c *Conn) touch() { c.lastRecv.Store(int64(time.Since(c.epoch))) }
