package bokbok

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxHandshakes is the default of Server.MaxHandshakes.
const DefaultMaxHandshakes = 64

// DefaultMaxOpening is the default of Server.MaxOpening.
const DefaultMaxOpening = 1024

// ErrServerBusy reports that a server closed a new connection at once,
// without reading from it or writing to it, because Server.MaxOpening
// connections were already opening.
var ErrServerBusy = errors.New("bokbok: server busy: too many connections opening")

// Server accepts bokbok connections and serves them with its Config: the
// Handler serves each client's requests (and, as on any connection, the
// server may call the client back through the *Conn it is given in
// OnOpen or in Request.Conn).
//
// A connection costs the server little until the client has sent its
// preamble and first handshake message: only then does it take one of
// the MaxHandshakes slots for the work that costs CPU (looking up the key,
// the Noise handshake). Until then it is bounded by MaxOpening and by
// Config.HandshakeTimeout, counted from accept, so slow or silent clients
// cannot keep well-behaved ones from opening.
//
// The zero Server is ready to use; set fields before calling Serve and do
// not change them afterwards.
type Server struct {
	// Config applies to every accepted connection. Its OnClose runs for
	// every connection whose handshake succeeded.
	Config

	// OnOpen, if set, is called for each connection after its handshake
	// and before any of the peer's requests is handled; it may make calls
	// on the connection. Returning an error closes the connection with
	// that error as the reason.
	OnOpen func(c *Conn) error

	// UserKey, if set, makes the server secure: it accepts only secure
	// clients, and looks up the key of the user each one claims to be.
	// It returns false for an unknown user; that client is refused exactly
	// as one with a wrong key is (same error, same bytes on the wire, same
	// work), so clients cannot tell which user names exist, except through
	// any difference in how long UserKey itself takes. UserKey may be
	// called from many goroutines at once. Nil means an insecure server,
	// which refuses secure clients.
	UserKey func(user string) (key Key, ok bool)

	// UserKeys, if set instead of UserKey, makes the server secure in the
	// same way, and lets a user have up to MaxUserKeys valid keys at once:
	// during a key rotation, the old key and the new. It returns the keys
	// of user, none for an unknown user; keys beyond the first MaxUserKeys
	// are not tried. The server tries every candidate for every client,
	// padding with keys nobody knows, so a user with one key, with two,
	// and an unknown user are refused alike, with the same work. The
	// server does not keep or modify the returned slice. A KeysFile's
	// UserKeys method fits here. Setting both UserKey and UserKeys is an
	// error.
	UserKeys func(user string) []Key

	// OnRefused, if set, is called when a connection that Serve accepted
	// does not open: its handshake failed (an error matching ErrAuth,
	// ErrMode, ErrVersion, ErrHandshakeTimeout, or a *ProtocolError),
	// OnOpen refused it, or it was closed at once because MaxOpening
	// connections were already opening (an error matching ErrServerBusy).
	// remote is the client's address. It is not called for connections
	// refused because the server is shutting down. It runs on the
	// connection's own goroutine, except for ErrServerBusy: then it runs
	// on Serve's goroutine before the next accept, so it should be quick.
	// (ServeConn returns such errors to its caller instead.)
	OnRefused func(remote net.Addr, err error)

	// MaxHandshakes limits how many connections may be doing the costly
	// part of their opening at once: looking up the key and running the
	// Noise handshake (or, on an insecure server, reading the client's
	// SETTINGS). A connection takes a slot only once the client's preamble
	// and first handshake message have arrived, and gives it back before it
	// waits for the client again. Further connections wait for a slot
	// within their handshake timeout, and are closed when it passes.
	// Default DefaultMaxHandshakes.
	MaxHandshakes int

	// MaxOpening limits how many accepted connections may be opening at
	// once: from accept until their handshake has ended, however it ended.
	// A connection accepted beyond it is closed at once, with nothing read
	// or written, and OnRefused is told with an error matching
	// ErrServerBusy. Connections given to ServeConn count too; ServeConn
	// refuses them with that error. Default DefaultMaxOpening.
	MaxOpening int

	opening atomic.Int64 // connections accepted whose handshake has not ended

	mu         sync.Mutex    // guards the fields below
	cfg        *Config       // Config with defaults, from the first Serve
	handshakes chan struct{} // a token per handshake doing its costly work
	quit       chan struct{} // closed when the server stops: ends waits for a handshake slot
	secret     Key           // keys the dummy keys of unknown users; random per Server
	listeners  map[net.Listener]struct{}
	conns      map[*Conn]struct{} // connections, including those still in the handshake
	active     int                // Serve loops and connections not yet finished
	closed     bool
	idle       chan struct{} // closed when closed and active reaches 0
	busyLogged time.Time     // when ErrServerBusy was last logged
	busyQuiet  int           // connections closed with ErrServerBusy since then, for the next warning
}

// ListenAndServe listens on addr (see ParseAddr) and serves it. It returns
// ErrServerClosed after Shutdown or Close, or the error that stopped it.
func (s *Server) ListenAndServe(addr string) error {
	ln, err := Listen(addr)
	if err != nil {
		return err
	}
	return s.Serve(ln)
}

// Serve accepts connections on ln and serves each on its own goroutines
// until Shutdown or Close, then returns ErrServerClosed. It closes ln when
// it returns. Transient accept errors (such as running out of file
// descriptors) are retried with a growing pause.
func (s *Server) Serve(ln net.Listener) error {
	cfg, err := s.begin(ln)
	if err != nil {
		ln.Close()
		return err
	}
	defer s.end(ln)
	var pause time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			cfg.Logger.Warn("bokbok: accept failed; retrying", "err", err, "pause", pause)
			time.Sleep(pause)
			continue
		}
		pause = 0
		if !s.startOpening() {
			s.refuseBusy(nc, cfg)
			continue
		}
		c := newConn(nc, cfg, "")
		if !s.track(c) {
			s.endOpening()
			nc.Close()
			return ErrServerClosed
		}
		go s.serveConn(c)
	}
}

// startOpening counts a connection as opening, unless MaxOpening are
// already.
func (s *Server) startOpening() bool {
	limit := int64(cmp.Or(s.MaxOpening, DefaultMaxOpening))
	for {
		n := s.opening.Load()
		if n >= limit {
			return false
		}
		if s.opening.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// endOpening counts a connection as no longer opening.
func (s *Server) endOpening() { s.opening.Add(-1) }

// busyError is the error of a connection closed because MaxOpening were
// already opening.
func (s *Server) busyError() error {
	return fmt.Errorf("%w (%d connections, Server.MaxOpening); closed at once", ErrServerBusy, cmp.Or(s.MaxOpening, DefaultMaxOpening))
}

// refuseBusy closes a connection accepted while MaxOpening connections
// were opening, logs it (at most once a second, with a count, so a flood
// cannot flood the log too) and tells OnRefused.
func (s *Server) refuseBusy(nc net.Conn, cfg *Config) {
	nc.Close()
	err := s.busyError()
	now := time.Now()
	s.mu.Lock()
	s.busyQuiet++
	closed := 0
	if now.Sub(s.busyLogged) >= time.Second {
		closed, s.busyQuiet, s.busyLogged = s.busyQuiet, 0, now
	}
	stopping := s.closed
	s.mu.Unlock()
	if closed > 0 {
		cfg.Logger.Warn("bokbok: too many connections opening; closing new ones at once",
			"remote", nc.RemoteAddr(), "err", err, "closed", closed)
	}
	if !stopping {
		s.refused(nc.RemoteAddr(), err)
	}
}

// refused reports a connection that did not open to OnRefused and Stats.
func (s *Server) refused(remote net.Addr, err error) {
	if s.Stats != nil {
		s.Stats.HandleConn(ConnStats{Remote: remote, Refused: true, Err: err})
	}
	if s.OnRefused != nil {
		s.OnRefused(remote, err)
	}
}

// ServeConn opens a bokbok connection over nc, already accepted by the
// caller, as the server side, and returns it once its handshake is done
// and OnOpen has accepted it. The connection is then the server's, like
// those Serve accepts: Shutdown and Close reach it. ctx bounds the
// handshake only.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) (*Conn, error) {
	cfg, err := s.config()
	if err != nil {
		nc.Close()
		return nil, err
	}
	if !s.startOpening() {
		nc.Close()
		return nil, s.busyError()
	}
	c := newConn(nc, cfg, "")
	if !s.track(c) {
		s.endOpening()
		nc.Close()
		return nil, ErrServerClosed
	}
	if err := s.openConn(ctx, c); err != nil {
		return nil, err
	}
	return c, nil
}

func (s *Server) serveConn(c *Conn) {
	if err := s.openConn(context.Background(), c); err != nil {
		c.log.Debug("bokbok: connection not opened", "remote", c.nc.RemoteAddr(), "err", err)
		if !s.isClosed() {
			s.refused(c.nc.RemoteAddr(), err)
		}
	}
}

// openConn runs the handshake and OnOpen for a tracked connection that
// counts as opening; the handshake takes a handshake slot when it gets to
// its costly work.
func (s *Server) openConn(ctx context.Context, c *Conn) error {
	c.afterClose = func() { s.untrack(c) }
	s.mu.Lock()
	slots, quit := s.handshakes, s.quit
	s.mu.Unlock()
	op := opening{server: true, userKeys: s.keyLookup(), secret: &s.secret,
		slots: slots, quit: quit, afterHandshake: s.endOpening}
	err := c.open(ctx, op, s.OnOpen)
	if err != nil && !c.started() {
		c.nc.Close()
		s.untrack(c) // the closer never ran
	}
	return err
}

// keyLookup returns the server's key lookup as a list of keys per user,
// or nil for an insecure server.
func (s *Server) keyLookup() func(user string) []Key {
	if s.UserKeys != nil {
		return s.UserKeys
	}
	if lookup := s.UserKey; lookup != nil {
		return func(user string) []Key {
			if k, ok := lookup(user); ok {
				return []Key{k}
			}
			return nil
		}
	}
	return nil
}

// Shutdown stops the server gracefully: it closes the listeners, then
// shuts every connection down (see Conn.Shutdown), and returns when all
// are closed. It returns nil only if every connection finished its work
// in flight. Otherwise it returns an error matching ErrUnfinished whose
// *ShutdownError (errors.As) adds up the work left over all connections.
// If ctx ends first, the remaining connections are closed at once and the
// error matches ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	conns := s.stop()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex // guards lost
		lost ShutdownError
	)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !c.started() {
				c.nc.Close() // still in its handshake: nothing in flight
				return
			}
			var se *ShutdownError
			if err := c.Shutdown(ctx); errors.As(err, &se) {
				mu.Lock()
				lost.Outgoing += se.Outgoing
				lost.Incoming += se.Incoming
				if lost.Cause == nil || ctx.Err() != nil {
					lost.Cause = se.Cause
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	err := ctx.Err()
	if err == nil {
		select {
		case <-s.idleChan():
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err != nil { // connections were cut at the deadline
		s.Close()
		lost.Cause = err
	}
	if lost.Outgoing+lost.Incoming > 0 {
		return &lost
	}
	return err
}

// Close stops the server at once: it closes the listeners and every
// connection. It does not wait; use Wait for that.
func (s *Server) Close() error {
	for _, c := range s.stop() {
		if c.started() {
			c.fail(nil)
		} else {
			c.nc.Close()
		}
	}
	return nil
}

// Wait blocks until the server has been shut down or closed and every
// Serve loop and connection (including its OnClose) has finished.
func (s *Server) Wait() {
	<-s.idleChan()
}

// config returns the Config with defaults, computed once.
func (s *Server) config() (*Config, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg == nil {
		cfg, err := s.Config.withDefaults()
		if err != nil {
			return nil, err
		}
		if s.MaxHandshakes < 0 {
			return nil, fmt.Errorf("bokbok: Server.MaxHandshakes is %d, want >= 0 (0 means the default, %d)", s.MaxHandshakes, DefaultMaxHandshakes)
		}
		if s.UserKey != nil && s.UserKeys != nil {
			return nil, errors.New("bokbok: Server.UserKey and Server.UserKeys are both set; set one (UserKeys lets a user have two keys)")
		}
		if s.MaxOpening < 0 {
			return nil, fmt.Errorf("bokbok: Server.MaxOpening is %d, want >= 0 (0 means the default, %d)", s.MaxOpening, DefaultMaxOpening)
		}
		if s.secret, err = GenerateKey(); err != nil {
			return nil, err
		}
		s.handshakes = make(chan struct{}, cmp.Or(s.MaxHandshakes, DefaultMaxHandshakes))
		s.quit = make(chan struct{})
		if s.closed {
			close(s.quit)
		}
		s.cfg = cfg
	}
	return s.cfg, nil
}

func (s *Server) begin(ln net.Listener) (*Config, error) {
	cfg, err := s.config()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners = make(map[net.Listener]struct{})
	}
	s.listeners[ln] = struct{}{}
	s.active++
	return cfg, nil
}

func (s *Server) end(ln net.Listener) {
	ln.Close()
	s.mu.Lock()
	delete(s.listeners, ln)
	s.mu.Unlock()
	s.done()
}

func (s *Server) track(c *Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[*Conn]struct{})
	}
	s.conns[c] = struct{}{}
	s.active++
	return true
}

func (s *Server) untrack(c *Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.done()
}

// done counts one Serve loop or connection as finished.
func (s *Server) done() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active--
	if s.closed && s.active == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// stop marks the server closed, closes its listeners and returns its
// connections.
func (s *Server) stop() []*Conn {
	s.mu.Lock()
	if !s.closed && s.quit != nil {
		close(s.quit)
	}
	s.closed = true
	lns := make([]net.Listener, 0, len(s.listeners))
	for ln := range s.listeners {
		lns = append(lns, ln)
	}
	conns := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
	return conns
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// idleChan returns a channel closed once the server is closed and idle.
func (s *Server) idleChan() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed && s.active == 0 {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	if s.idle == nil {
		s.idle = make(chan struct{})
	}
	return s.idle
}
