package ocap

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/bokbok-go/bokbok"
)

// Node serves the capability protocol on bokbok connections. It is a
// bokbok.Handler: set it as Config.Handler of connections (or of a
// Server) that should speak capabilities. Messages that are not capability
// messages go to Fallback, so an application can use one connection for
// both.
//
// A Node's bootstrap object answers "fetch" with the references
// bound to names (Bind). Nothing else is reachable from the peer until the
// program sends it references. The zero Node is ready to use.
type Node struct {
	// Fallback handles requests and notifications that are not
	// capability messages. Nil answers requests with bokbok.CodeNoHandler
	// and drops notifications.
	Fallback bokbok.Handler

	// Logger receives protocol violations by peers. Nil logs nothing.
	Logger *slog.Logger

	// Addr is the address peers dial to reach this node (bokbok.ParseAddr
	// forms; a Unix socket by its absolute path), written into the
	// sturdyrefs Register makes.
	Addr string

	// Realm is the bokbok.Config.Realm of the node's server, written into
	// its sturdyrefs; "" by default.
	Realm string

	// Config holds the settings of connections Enliven dials (nil: the
	// defaults); their Key, User, Realm and Handler are set by Enliven.
	Config *bokbok.Config

	// Store, if set, keeps the swiss numbers of RegisterAs.
	Store *Store

	// The fields below bound what one peer can make the node hold; 0
	// means the default (DefaultMaxAnswers and so on). A peer that goes
	// beyond MaxAnswers, MaxImports or MaxDescriptorsPerMessage breaks
	// the protocol: the session is aborted (op:abort, with the bound in
	// the reason) and the violation logged at Warn through Logger. So is a
	// session whose queue of capability messages outgrows
	// MaxQueuedMessages or MaxQueuedBytes (a peer that does not take
	// them), whatever filled it; a program that sends faster than its
	// peer reads can meet this bound too.

	// MaxAnswers bounds the answers a session owes its peer: questions
	// the peer asked and has not yet sent op:finish for, answered or not.
	MaxAnswers int

	// MaxImports bounds the peer's objects a session holds references to.
	MaxImports int

	// MaxDescriptorsPerMessage bounds the references one capability
	// message may carry. It is checked before anything is made for them.
	MaxDescriptorsPerMessage int

	// MaxQueuedMessages and MaxQueuedBytes bound the capability messages
	// a session has queued for its connection and not yet written.
	MaxQueuedMessages int
	MaxQueuedBytes    int

	// MaxPendingPerPromise bounds the messages that may wait on one
	// unsettled answer the node owes a peer (messages pipelined to it).
	// Further messages break with ErrTooManyPending (code
	// ocap.too_many_pending); the session goes on.
	MaxPendingPerPromise int

	// SendTimeout bounds how long a session waits for its connection to
	// take one capability message (the peer grants notifications as it
	// reads them). A peer that takes none for that long ends the session.
	SendTimeout time.Duration

	// MaxVatQueued bounds how many of one peer's messages may wait in the
	// queues of the vats their actors live in (a peer can send faster than
	// actors run, with or without asking for answers). Beyond it the
	// session is aborted. Default DefaultMaxVatQueued.
	MaxVatQueued int

	mu       sync.Mutex // guards the maps below
	sessions map[*bokbok.Conn]*Session
	names    map[string]Ref
	sturdy   map[string]*sturdyEntry // by sturdyID
	hosts    map[string]*hostDial    // connections for Enliven, by address and realm
}

// Bind makes r reachable by name through the bootstrap object of
// every connection ("fetch", or Session.Fetch on the peer). Binding a
// name again replaces it.
func (n *Node) Bind(name string, r Ref) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.names == nil {
		n.names = map[string]Ref{}
	}
	n.names[name] = r
}

// Unbind removes a name. References already fetched stay valid.
func (n *Node) Unbind(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.names, name)
}

func (n *Node) lookup(name string) (Ref, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r, ok := n.names[name]
	return r, ok
}

// Session returns the node's session for a connection, starting it if
// needed. The connection's Handler must be the node. It returns nil if the
// connection has already closed.
func (n *Node) Session(c *bokbok.Conn) *Session {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s := n.sessions[c]; s != nil {
		return s
	}
	select {
	case <-c.Done():
		return nil
	default:
	}
	if n.sessions == nil {
		n.sessions = map[*bokbok.Conn]*Session{}
	}
	s := newSession(n, c)
	n.sessions[c] = s
	return s
}

// Sessions returns the node's open sessions.
func (n *Node) Sessions() []*Session {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*Session, 0, len(n.sessions))
	for _, s := range n.sessions {
		select {
		case <-s.done: // ended; its sendLoop has yet to forget it
			continue
		default:
		}
		out = append(out, s)
	}
	return out
}

// forget removes a session whose connection has closed.
func (n *Node) forget(s *Session) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sessions[s.conn] == s {
		delete(n.sessions, s.conn)
	}
	for key, d := range n.hosts {
		select {
		case <-d.done:
			if d.s == s {
				delete(n.hosts, key)
			}
		default:
		}
	}
}

// Close closes the connections of all the node's sessions (those it dialled
// and those it serves) and waits until the sessions have ended. The node
// stays usable: new connections start new sessions.
func (n *Node) Close() error {
	for _, s := range n.Sessions() {
		s.Close()
	}
	return nil
}

// Listen listens on addr (the forms of bokbok.Listen) for the node's
// server, such as a bokbok.Server whose Run or Serve is given the
// listener. If Node.Addr is empty, Listen sets it to the address peers
// dial to reach the listener (bokbok.ListenerAddr: for TCP the port the
// listener got, for a Unix socket its absolute path), so that Register
// writes it into sturdyrefs. A Node.Addr already set is kept: it is the
// public address, for peers that must dial another one than addr (a host
// name, a port forwarded to this one).
//
// Listening on all interfaces (":7000", "0.0.0.0:7000") gives an
// unspecified IP, which only peers on this machine can dial; set Node.Addr
// to a name others reach before registering. Call Listen before Register
// and not concurrently with it, since it writes Node.Addr.
func (n *Node) Listen(addr string) (net.Listener, error) {
	ln, err := bokbok.Listen(addr)
	if err != nil {
		return nil, err
	}
	if n.Addr == "" {
		a, err := bokbok.ListenerAddr(ln)
		if err != nil {
			ln.Close()
			return nil, err
		}
		n.Addr = a.String()
	}
	return ln, nil
}

// Dial connects to addr (see bokbok.Dial) with the node as the
// connection's handler and returns the session. cfg may be nil; its
// Handler is replaced.
func (n *Node) Dial(ctx context.Context, addr string, cfg *bokbok.Config) (*Session, error) {
	c, err := bokbok.Dial(ctx, addr, n.config(cfg))
	if err != nil {
		return nil, err
	}
	return n.sessionOrClose(c)
}

// NewSession runs bokbok.NewConn on nc with the node as the connection's
// handler and returns the session.
func (n *Node) NewSession(ctx context.Context, nc net.Conn, cfg *bokbok.Config) (*Session, error) {
	c, err := bokbok.NewConn(ctx, nc, n.config(cfg))
	if err != nil {
		return nil, err
	}
	return n.sessionOrClose(c)
}

func (n *Node) config(cfg *bokbok.Config) *bokbok.Config {
	var c bokbok.Config
	if cfg != nil {
		c = *cfg
	}
	c.Handler = n
	return &c
}

func (n *Node) sessionOrClose(c *bokbok.Conn) (*Session, error) {
	s := n.Session(c)
	if s == nil {
		err := c.Err()
		c.Close()
		return nil, &disconnected{cause: err}
	}
	return s, nil
}

// ServeBokbok implements bokbok.Handler: capability messages go to the
// connection's session, others to Fallback.
func (n *Node) ServeBokbok(ctx context.Context, req *bokbok.Request) (any, error) {
	if isCap, err := n.serveCap(req.Conn(), req.Raw(), req.IsNotification()); isCap {
		return nil, err
	}
	if n.Fallback != nil && !isSturdyConn(req.Conn()) {
		return n.Fallback.ServeBokbok(ctx, req)
	}
	return nil, bokbok.Errorf(bokbok.CodeNoHandler, "this peer serves only capability messages")
}

// serveCap gives raw, the message of a request or notification on c, to
// c's session if it is a capability message, and reports whether it was.
func (n *Node) serveCap(c *bokbok.Conn, raw []byte, notification bool) (bool, error) {
	op, isCap := capOp(raw)
	if !isCap {
		return false, nil
	}
	if !notification {
		return true, bokbok.Errorf(CodeBadArgs, "capability message %s must be a notification", op)
	}
	if s := n.Session(c); s != nil {
		s.receive(raw)
	}
	return true, nil
}

// warn logs at Warn through Logger, if set.
func (n *Node) warn(msg string, args ...any) {
	if n.Logger != nil {
		n.Logger.Warn(msg, args...)
	}
}

// bootstrap is a session's bootstrap object, export 0.
func (n *Node) bootstrap(s *Session) target { return bootstrapObj{n: n, s: s} }

type bootstrapObj struct {
	n *Node
	s *Session
}

// deliver answers "fetch" (a name bound with Node.Bind) and "enliven" (a
// swiss number registered with Node.Register).
func (b bootstrapObj) deliver(m *message, w *flow) {
	var r Ref
	var err error
	switch m.method {
	case "fetch":
		r, err = b.fetch(m)
	case "enliven":
		r, err = b.enliven(m)
	default:
		err = remoteErrorf(CodeNoMethod, "the bootstrap object has no method %q (it has fetch and enliven)", m.method)
	}
	if err != nil {
		m.fail(err, w)
		return
	}
	if m.answer != nil {
		p, err := encodePayload(r)
		m.answer.settle(p, err, w)
	}
}

func (b bootstrapObj) fetch(m *message) (Ref, error) {
	if isSturdyConn(b.s.conn) {
		return Ref{}, remoteErrorf(CodeNoMethod, "a connection opened for a sturdyref can only enliven")
	}
	var name string
	if err := (&Message{Method: m.method, args: m.args}).Args(&name); err != nil {
		return Ref{}, err
	}
	r, ok := b.n.lookup(name)
	if !ok {
		return Ref{}, remoteErrorf(CodeNotFound, "nothing is bound to %q", name)
	}
	return r, nil
}

func (b bootstrapObj) enliven(m *message) (Ref, error) {
	var swiss []byte
	if err := (&Message{Method: m.method, args: m.args}).Args(&swiss); err != nil {
		return Ref{}, err
	}
	b.n.mu.Lock()
	e := b.n.lookupSwissLocked(swiss)
	b.n.mu.Unlock()
	if e == nil {
		return Ref{}, remoteErrorf(CodeNotFound, "no such sturdyref (revoked, or never registered here)")
	}
	return e.ref, nil
}
