package bokbok

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"time"
)

// Defaults of ClientConfig.
const (
	DefaultMinBackoff  = 100 * time.Millisecond
	DefaultMaxBackoff  = 10 * time.Second
	DefaultDialTimeout = 10 * time.Second
)

// ErrClientClosed is returned by the calls of a Client after Close.
var ErrClientClosed = errors.New("bokbok: client closed")

// ErrNotConnected matches the error of a Client call that found no
// connection: the Client could not connect before the caller's context
// ended, or its last attempt failed in a way that waiting does not cure
// (ErrAuth, ErrMode, ErrVersion, a peer that is not speaking bokbok, an
// error from OnConnect). The error also matches ErrNotSent, the reason of
// the last failed attempt, and the caller's context error if that ended
// the wait.
var ErrNotConnected = errors.New("bokbok: not connected")

// ClientConfig configures a Client. The zero value is usable: it makes
// insecure connections with the defaults of Config.
type ClientConfig struct {
	// Config applies to every connection the Client opens (its User and
	// Key make them secure; its Handler serves the server's calls). It is
	// checked by NewClient as Dial checks it.
	Config

	// OnConnect, if set, runs on every new connection before any call is
	// made on it: the place to resubscribe a watch or register a callback
	// again after a reconnection. ctx ends after DialTimeout or when the
	// Client is closed. An error closes that connection and counts as a
	// failed attempt to connect, which calls waiting for a connection
	// are given at once.
	OnConnect func(ctx context.Context, c *Conn) error

	// MinBackoff and MaxBackoff bound the wait between attempts to
	// connect: after the n-th failure in a row the Client waits about
	// MinBackoff * 2^(n-1), at most MaxBackoff, chosen at random in the
	// upper half of that (jitter, so that many clients of a restarted
	// server do not come back at the same instant). A connection that is
	// lost is redialled at once, unless it had lasted less than a second.
	// Defaults DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration

	// DialTimeout bounds one attempt to connect: the dial, the handshake
	// and OnConnect. Default DefaultDialTimeout.
	DialTimeout time.Duration

	// AttemptTimeout, if positive, bounds each attempt of a call (the
	// caller's context bounds them all). An attempt that times out has
	// an unknown fate, so it is retried only if the call is idempotent
	// (see Idempotent); otherwise the call fails with
	// context.DeadlineExceeded.
	AttemptTimeout time.Duration

	// MaxAttempts, if positive, bounds how many times one call is
	// attempted. Zero leaves it to the caller's context.
	MaxAttempts int

	// Dial, if set, opens the network connection to addr instead of the
	// default dialer (see ParseAddr for the forms addr may take).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// Client keeps a connection to one address and makes calls on it,
// reconnecting when the connection is lost: it dials on its first use,
// and from then on keeps a connection open, redialling after a loss with
// exponential backoff and jitter, until Close. It offers the calls of a
// *Conn (Request, Call, Invoke, Notify and their method forms), and is an
// Invoker for the typed calls, from any number of goroutines.
//
// A call is sent on the current connection, waiting for one within its
// context while there is none. Retries keep the at-most-once rule of
// *Conn: a call that was never sent (it fails with ErrNotSent: its
// connection closed or began draining before any of it went out; or no
// connection) is sent again, on the next connection; a request the peer
// refused as busy (ErrBusy) is sent again after a backoff; a request whose
// fate is unknown (ErrClosed after it was sent, or an AttemptTimeout) is
// sent again only if its context is marked with Idempotent. Any other
// error is returned as it is. Notifications are retried when not sent.
type Client struct {
	addr string
	cfg  ClientConfig // with defaults
	log  *slog.Logger

	life context.Context    // ends when Close begins: stops the maintainer and its dials
	halt context.CancelFunc // ends life
	done chan struct{}      // closed when the maintainer has ended

	mu      sync.Mutex    // guards the fields below
	conn    *Conn         // the connection calls use; nil while there is none
	lastErr error         // why the last attempt to connect failed; nil after a success
	fatal   bool          // lastErr is one that waiting does not cure
	changed chan struct{} // closed (and replaced) when conn or lastErr changes
	running bool          // the maintainer has been started
	closed  bool
	old     []*Conn // connections lost or draining that may still be open, for Close
}

// NewClient returns a Client for addr (see ParseAddr). It checks addr and
// cfg (nil means the zero ClientConfig) but does not dial: the first call
// does.
func NewClient(addr string, cfg *ClientConfig) (*Client, error) {
	if _, err := ParseAddr(addr); err != nil {
		return nil, err
	}
	c := &Client{addr: addr, done: make(chan struct{}), changed: make(chan struct{})}
	if cfg != nil {
		c.cfg = *cfg
	}
	full, err := c.cfg.Config.dialDefaults()
	if err != nil {
		return nil, err
	}
	c.log = full.Logger
	d := &c.cfg
	switch {
	case d.MinBackoff < 0, d.MaxBackoff < 0, d.DialTimeout < 0, d.AttemptTimeout < 0, d.MaxAttempts < 0:
		return nil, errors.New("bokbok: ClientConfig durations and MaxAttempts must not be negative")
	case d.MinBackoff > 0 && d.MaxBackoff > 0 && d.MinBackoff > d.MaxBackoff:
		return nil, fmt.Errorf("bokbok: ClientConfig.MinBackoff %v is above MaxBackoff %v", d.MinBackoff, d.MaxBackoff)
	}
	if d.MinBackoff == 0 {
		d.MinBackoff = DefaultMinBackoff
		if d.MaxBackoff > 0 {
			d.MinBackoff = min(d.MinBackoff, d.MaxBackoff)
		}
	}
	if d.MaxBackoff == 0 {
		d.MaxBackoff = max(DefaultMaxBackoff, d.MinBackoff)
	}
	if d.DialTimeout == 0 {
		d.DialTimeout = DefaultDialTimeout
	}
	c.life, c.halt = context.WithCancel(context.Background())
	return c, nil
}

// Addr returns the address the Client connects to.
func (c *Client) Addr() string { return c.addr }

// Conn returns the Client's current connection, waiting within ctx until
// there is one (the first call starts connecting). It fails with
// ErrClientClosed after Close, or with an error matching ErrNotConnected.
// The connection may be lost at any time; calls made on it directly are
// not retried.
func (c *Client) Conn(ctx context.Context) (*Conn, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClientClosed
		}
		if !c.running {
			c.running = true
			go c.maintain()
		}
		if conn := c.conn; conn != nil && !isClosed(conn.Draining()) {
			c.mu.Unlock()
			return conn, nil
		}
		if c.fatal {
			err := &notConnectedError{addr: c.addr, last: c.lastErr}
			c.mu.Unlock()
			return nil, err
		}
		ch, last := c.changed, c.lastErr
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, &notConnectedError{addr: c.addr, last: last, ctxErr: ctx.Err()}
		}
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Request is Conn.Request on the Client's connection, retried as the
// Client's documentation says.
func (c *Client) Request(ctx context.Context, msg any) (*Response, error) {
	return c.RequestMethod(ctx, "", msg)
}

// RequestMethod is Conn.RequestMethod on the Client's connection, retried
// as the Client's documentation says.
func (c *Client) RequestMethod(ctx context.Context, method string, msg any) (*Response, error) {
	var resp *Response
	err := c.retry(ctx, true, func(ctx context.Context, conn *Conn) (err error) {
		resp, err = conn.RequestMethod(ctx, method, msg)
		return err
	})
	return resp, err
}

// Call is Conn.Call on the Client's connection, retried as the Client's
// documentation says.
func (c *Client) Call(ctx context.Context, msg, out any) error {
	return c.Invoke(ctx, "", msg, out)
}

// Invoke is Conn.Invoke on the Client's connection, retried as the
// Client's documentation says. It makes a *Client an Invoker.
func (c *Client) Invoke(ctx context.Context, method string, msg, out any) error {
	if err := checkOut(out); err != nil {
		return err
	}
	return c.retry(ctx, true, func(ctx context.Context, conn *Conn) error {
		return conn.Invoke(ctx, method, msg, out)
	})
}

// Notify is Conn.Notify on the Client's connection, sent again on the
// next connection if it could not be sent.
func (c *Client) Notify(ctx context.Context, msg any) error {
	return c.NotifyMethod(ctx, "", msg)
}

// NotifyMethod is Conn.NotifyMethod on the Client's connection, sent
// again on the next connection if it could not be sent.
func (c *Client) NotifyMethod(ctx context.Context, method string, msg any) error {
	return c.retry(ctx, false, func(ctx context.Context, conn *Conn) error {
		return conn.NotifyMethod(ctx, method, msg)
	})
}

// retry runs attempt on the current connection until it succeeds or
// fails in a way that may not be retried (see Client).
func (c *Client) retry(ctx context.Context, request bool, attempt func(context.Context, *Conn) error) error {
	idempotent := IsIdempotent(ctx)
	busy := 0
	for n := 1; ; n++ {
		conn, err := c.Conn(ctx)
		if err != nil {
			return err
		}
		actx, cancel := ctx, context.CancelFunc(func() {})
		if c.cfg.AttemptTimeout > 0 && request {
			actx, cancel = context.WithTimeout(ctx, c.cfg.AttemptTimeout)
		}
		err = attempt(actx, conn)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		var wait time.Duration
		switch {
		case errors.Is(err, ErrNotSent):
			// Its connection is closed or draining: the next one is
			// waited for in Conn.
		case errors.Is(err, ErrClosed):
			if !idempotent {
				return err // it may have run
			}
		case request && errors.Is(err, ErrBusy):
			busy++
			wait = c.backoff(busy)
		case errors.Is(err, context.DeadlineExceeded) && actx != ctx:
			if !idempotent {
				return err // the attempt timed out: it may have run
			}
		default:
			return err
		}
		if c.cfg.MaxAttempts > 0 && n >= c.cfg.MaxAttempts {
			return err
		}
		if wait > 0 && !sleepCtx(ctx, wait) {
			return ctx.Err()
		}
	}
}

// sleepCtx waits for d, or until ctx ends; it reports whether it waited
// the whole time.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoff returns the wait after the n-th failure in a row (n >= 1).
func (c *Client) backoff(n int) time.Duration {
	d := c.cfg.MinBackoff
	for i := 1; i < n && d < c.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.cfg.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// Close stops the Client: it stops reconnecting, closes its connections
// at once (calls in flight fail with ErrClosed), and waits until its own
// goroutine has ended. Calls made afterwards fail with ErrClientClosed.
func (c *Client) Close() error {
	for _, conn := range c.stop() {
		conn.Close()
	}
	return nil
}

// Shutdown stops the Client gracefully: it stops reconnecting, refuses
// new calls with ErrClientClosed, and shuts its connections down as
// Conn.Shutdown does, letting calls in flight finish until ctx ends. It
// returns the first error of those shutdowns.
func (c *Client) Shutdown(ctx context.Context) error {
	conns := c.stop()
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, conn := range conns {
		wg.Go(func() { errs[i] = conn.Shutdown(ctx) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// stop marks the Client closed, waits for the maintainer to end, and
// returns the connections that may still be open.
func (c *Client) stop() []*Conn {
	c.mu.Lock()
	if c.closed {
		running := c.running
		c.mu.Unlock()
		if running {
			<-c.done
		}
		return nil
	}
	c.closed = true
	conns := c.old
	if c.conn != nil {
		conns = append(conns, c.conn)
	}
	c.conn, c.old = nil, nil
	close(c.changed)
	c.changed = make(chan struct{})
	running := c.running
	c.mu.Unlock()
	c.halt()
	if running {
		<-c.done // from here on no connection is made
	}
	return conns
}

// maintain keeps the Client connected. It is the Client's one goroutine,
// started by the first call, and ends when Close ends c.life.
func (c *Client) maintain() {
	defer close(c.done)
	failures := 0
	for {
		if failures > 0 && !c.pause(c.backoff(failures)) {
			return
		}
		conn, err := c.connect()
		if err != nil {
			failures++
			c.failed(err, failures)
			continue
		}
		if !c.publish(conn) {
			conn.Close()
			return
		}
		since := time.Now()
		select {
		case <-conn.Draining(): // closed, or a graceful shutdown began
		case <-c.life.Done():
			return // Close closes conn
		}
		c.unpublish(conn)
		if time.Since(since) < time.Second {
			failures++ // a connection that does not last: back off
		} else {
			failures = 0
		}
	}
}

// pause waits for d, unless the Client is closed first.
func (c *Client) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.life.Done():
		return false
	}
}

// connect makes one attempt to connect: dial, handshake, OnConnect.
func (c *Client) connect() (*Conn, error) {
	ctx, cancel := context.WithTimeout(c.life, c.cfg.DialTimeout)
	defer cancel()
	var (
		conn *Conn
		err  error
	)
	if c.cfg.Dial != nil {
		var nc net.Conn
		if nc, err = c.cfg.Dial(ctx, c.addr); err == nil {
			conn, err = NewConn(ctx, nc, &c.cfg.Config)
		}
	} else {
		conn, err = Dial(ctx, c.addr, &c.cfg.Config)
	}
	if err != nil {
		return nil, err
	}
	if c.cfg.OnConnect != nil {
		if err := c.cfg.OnConnect(ctx, conn); err != nil {
			lost := conn.Err()
			conn.Close()
			if lost != nil {
				return nil, lost // the connection was lost meanwhile: try again
			}
			return nil, &onConnectError{err}
		}
	}
	return conn, nil
}

// failed records a failed attempt to connect and wakes the calls waiting.
func (c *Client) failed(err error, failures int) {
	level := slog.LevelDebug
	if failures == 1 {
		level = slog.LevelInfo
	}
	c.log.Log(context.Background(), level, "bokbok: client cannot connect", "addr", c.addr, "attempt", failures, "err", err)
	c.mu.Lock()
	c.lastErr, c.fatal = err, isFatalDialError(err)
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// publish makes conn the connection calls use, unless the Client was
// closed meanwhile.
func (c *Client) publish(conn *Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.conn, c.lastErr, c.fatal = conn, nil, false
	close(c.changed)
	c.changed = make(chan struct{})
	return true
}

// unpublish stops calls from using conn, which is closed or draining; a
// draining one is kept for Close until it has closed.
func (c *Client) unpublish(conn *Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == conn {
		c.conn = nil
	}
	old := make([]*Conn, 0, len(c.old)+1)
	for _, o := range c.old {
		if !isClosed(o.Done()) {
			old = append(old, o)
		}
	}
	if !isClosed(conn.Done()) {
		old = append(old, conn)
	}
	c.old = old
}

// isFatalDialError reports whether waiting does not cure a failure to
// connect: calls waiting for a connection are given it at once.
// A connection cut during the handshake (the server died or restarts) is
// not: it may come out as a *ProtocolError for a truncated preamble.
func isFatalDialError(err error) bool {
	var oc *onConnectError
	switch {
	case errors.Is(err, ErrClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return false
	}
	return errors.Is(err, ErrAuth) || errors.Is(err, ErrMode) || errors.Is(err, ErrVersion) ||
		errors.Is(err, ErrProtocol) || errors.Is(err, ErrUserWithoutKey) || errors.As(err, &oc)
}

// onConnectError is an error returned by ClientConfig.OnConnect.
type onConnectError struct{ err error }

func (e *onConnectError) Error() string { return "OnConnect: " + e.err.Error() }
func (e *onConnectError) Unwrap() error { return e.err }

// notConnectedError is the error of a call that found no connection.
type notConnectedError struct {
	addr   string
	last   error // the last attempt's error, if any
	ctxErr error // the caller's context error, if that ended the wait
}

func (e *notConnectedError) Error() string {
	s := "bokbok: not connected to " + e.addr
	if e.last != nil {
		s += ": " + e.last.Error()
	}
	if e.ctxErr != nil {
		s += " (gave up waiting: " + e.ctxErr.Error() + ")"
	}
	return s
}

func (e *notConnectedError) Is(target error) bool {
	return target == ErrNotConnected || target == ErrNotSent
}

func (e *notConnectedError) Unwrap() []error {
	var errs []error
	if e.ctxErr != nil {
		errs = append(errs, e.ctxErr)
	}
	if e.last != nil {
		errs = append(errs, e.last)
	}
	return errs
}

// idempotentKey marks a context's calls as idempotent.
type idempotentKey struct{}

// Idempotent returns a context that marks the calls made with it as
// idempotent: running one twice does no harm, so a Client may send it
// again when its fate is unknown (the connection was lost after it was
// sent, or an attempt timed out). A *Conn never resends a call; the mark
// matters to a Client only.
func Idempotent(ctx context.Context) context.Context {
	return context.WithValue(ctx, idempotentKey{}, true)
}

// IsIdempotent reports whether ctx was marked with Idempotent.
func IsIdempotent(ctx context.Context) bool {
	v, _ := ctx.Value(idempotentKey{}).(bool)
	return v
}
