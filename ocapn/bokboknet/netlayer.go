package bokboknet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/ocapn"
)

// Transport is the netlayer's transport name, as OCapN locators carry it:
// ocapn://NAME.bokbok?addr=ADDR.
const Transport = "bokbok"

// AddrHint is the name of the location hint that says where a node
// listens: a bokbok address, as bokbok.ParseAddr reads it.
const AddrHint = "addr"

// Method is the bokbok method name of the notifications that carry a
// session's bytes.
const Method = "ocapn.bytes"

// MaxChunk is the most bytes one notification carries. Writes are split
// into chunks of at most this size; a peer that sends a larger one is cut
// off.
const MaxChunk = 64 << 10

// Defaults of Config's zero fields.
const (
	DefaultReceiveBuffer = 256 << 10 // bytes
	DefaultAcceptBacklog = 16
	DefaultCloseTimeout  = 2 * time.Second
)

// Defaults this netlayer gives the bokbok.Config fields that Config.Bokbok
// leaves zero (or all of them, without one): the connections carry only
// chunks of at most MaxChunk bytes, so they need less than bokbok's own
// defaults.
const (
	DefaultMaxMessageSize        = 2 * MaxChunk // the message limit this side announces
	DefaultNotifyBytes           = 1 << 20      // the peer's chunks held unhandled
	DefaultNotifyWindow          = 64           // the peer's chunks sent ahead of the handler
	DefaultMaxReceiveBytes       = 1 << 20      // the peer's requests (all refused) held
	DefaultMaxConcurrentHandlers = 4            // the peer's requests refused at once
)

// Config configures a Netlayer. Name and PeerKeys are required; every
// other zero field takes its default.
type Config struct {
	// Name is this node's designator on the transport, and the name it is
	// known by to its peers: the realm of its secure listener, and the
	// user name it authenticates as when it dials. 1 to 255 bytes of
	// ASCII letters, digits, '-', '_' and '.'.
	Name string

	// PeerKeys returns the pre-shared keys this node shares with the node
	// whose designator is peer: those a dialer that authenticates as peer
	// may use, and those this node uses to dial peer (tried in order
	// while the peer refuses them). A peer it gives no keys for can
	// neither dial this node nor be dialed. Keys beyond the first
	// bokbok.MaxUserKeys are not used. A bokbok.KeysFile's UserKeys method
	// fits here. It may be called from many goroutines at once.
	PeerKeys func(peer string) []bokbok.Key

	// Advertise is the address put in this node's location (its addr
	// hint), for peers to dial, in a form bokbok.ParseAddr reads. Default:
	// the listener's own address, which suits loopback and a host that
	// listens on one address peers can reach; set it when they reach this
	// node by a name, or through a proxy.
	Advertise string

	// Bokbok, if not nil, is the base of the bokbok.Config of every
	// connection (keepalive, handshake timeout, logger, stats, limits).
	// Its Key, User, Realm and Handler must be zero: the netlayer sets
	// them. Its OnClose, if set, is called after the netlayer's own. Zero
	// limits take this package's defaults (DefaultMaxMessageSize and the
	// others); MaxMessageSize, if set, must leave room for a chunk.
	Bokbok *bokbok.Config

	// ReceiveBuffer bounds the bytes a connection holds that the peer has
	// sent and the session has not read; while it is full, the peer's
	// writes wait. Default DefaultReceiveBuffer.
	ReceiveBuffer int

	// AcceptBacklog bounds the authenticated connections waiting for
	// Accept; one that arrives when it is full is closed. Default
	// DefaultAcceptBacklog.
	AcceptBacklog int

	// CloseTimeout bounds how long closing a connection waits for the
	// bytes written to reach the peer (a graceful bokbok shutdown) before
	// it closes the connection anyway. Default DefaultCloseTimeout.
	CloseTimeout time.Duration
}

// Netlayer is the bokbok netlayer of one node: it listens for peers'
// authenticated connections and dials peers with this node's keys. It
// implements ocapn.Netlayer; give it to ocapn.Node.AddNetlayer. Its
// methods may be called from any goroutine.
type Netlayer struct {
	cfg     Config
	base    *bokbok.Config // the connections' bokbok.Config, before the netlayer's own fields
	onClose func(*bokbok.Conn, error)
	loc     ocapn.Peer
	ln      net.Listener
	srv     *bokbok.Server
	served  chan struct{} // closed when the bokbok server's Serve has returned

	conns   sync.Map   // *bokbok.Conn to *Conn, for accepted connections
	backlog chan *Conn // accepted connections waiting for Accept
	done    chan struct{}
	once    sync.Once

	mu     sync.Mutex // guards closed, and orders pushes to backlog before Close drains it
	closed bool
}

// Listen listens on addr (see bokbok.ParseAddr: "host:port", ":0",
// "tcp://host:port", a Unix socket path) and returns the netlayer, which
// serves authenticated connections until Close. Its location is
// ocapn://NAME.bokbok?addr=ADDR.
func Listen(addr string, cfg Config) (*Netlayer, error) {
	nl, err := newNetlayer(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := bokbok.Listen(addr)
	if err != nil {
		return nil, err
	}
	advertise := cfg.Advertise
	if advertise == "" {
		a := bokbok.Addr{Network: ln.Addr().Network(), Address: ln.Addr().String()}
		advertise = a.String()
	}
	if _, err := bokbok.ParseAddr(advertise); err != nil {
		ln.Close()
		return nil, fmt.Errorf("bokboknet: Config.Advertise: %w", err)
	}
	nl.ln = ln
	nl.loc = ocapn.Peer{Transport: Transport, Designator: cfg.Name, Hints: map[string]string{AddrHint: advertise}}
	srvCfg := *nl.base
	srvCfg.Realm = cfg.Name
	srvCfg.Handler = bokbok.HandlerFunc(nl.serve)
	srvCfg.OnClose = nl.connClosed
	nl.srv = &bokbok.Server{Config: srvCfg, UserKeys: cfg.PeerKeys, OnOpen: nl.opened}
	go func() {
		defer close(nl.served)
		nl.srv.Serve(ln) // returns when Close closes ln
	}()
	return nl, nil
}

// newNetlayer checks cfg and fills in its defaults.
func newNetlayer(cfg Config) (*Netlayer, error) {
	if err := checkName(cfg.Name); err != nil {
		return nil, err
	}
	if cfg.PeerKeys == nil {
		return nil, errors.New("bokboknet: Config.PeerKeys is nil: the netlayer has no insecure mode, it needs the keys it shares with its peers")
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"ReceiveBuffer", cfg.ReceiveBuffer}, {"AcceptBacklog", cfg.AcceptBacklog}, {"CloseTimeout", int(cfg.CloseTimeout)}} {
		if f.v < 0 {
			return nil, fmt.Errorf("bokboknet: Config.%s is negative", f.name)
		}
	}
	if cfg.ReceiveBuffer == 0 {
		cfg.ReceiveBuffer = DefaultReceiveBuffer
	}
	if cfg.AcceptBacklog == 0 {
		cfg.AcceptBacklog = DefaultAcceptBacklog
	}
	if cfg.CloseTimeout == 0 {
		cfg.CloseTimeout = DefaultCloseTimeout
	}
	var base bokbok.Config
	if cfg.Bokbok != nil {
		base = *cfg.Bokbok
	}
	switch {
	case base.Key != nil, base.User != "", base.Realm != "":
		return nil, errors.New("bokboknet: Config.Bokbok sets Key, User or Realm: the netlayer sets them from Name and PeerKeys")
	case base.Handler != nil:
		return nil, errors.New("bokboknet: Config.Bokbok sets a Handler: the netlayer's connections carry only its own notifications")
	case base.MaxMessageSize != 0 && base.MaxMessageSize < MaxChunk+16:
		return nil, fmt.Errorf("bokboknet: Config.Bokbok.MaxMessageSize is %d, want at least %d (a chunk and its framing)", base.MaxMessageSize, MaxChunk+16)
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&base.MaxMessageSize, DefaultMaxMessageSize)
	def(&base.NotifyBytes, DefaultNotifyBytes)
	def(&base.NotifyWindow, DefaultNotifyWindow)
	def(&base.MaxReceiveBytes, max(DefaultMaxReceiveBytes, base.MaxMessageSize))
	def(&base.MaxConcurrentHandlers, DefaultMaxConcurrentHandlers)
	nl := &Netlayer{
		cfg:     cfg,
		onClose: base.OnClose,
		served:  make(chan struct{}),
		backlog: make(chan *Conn, cfg.AcceptBacklog),
		done:    make(chan struct{}),
	}
	base.OnClose = nil
	nl.base = &base
	return nl, nil
}

// checkName checks a designator this node takes as its own.
func checkName(name string) error {
	if len(name) == 0 || len(name) > 255 {
		return fmt.Errorf("bokboknet: Config.Name is %d bytes, want 1 to 255", len(name))
	}
	if i := strings.IndexFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}); i >= 0 {
		return fmt.Errorf("bokboknet: Config.Name %q has %q: use ASCII letters, digits, '-', '_' and '.'", name, name[i:i+1])
	}
	return nil
}

// Transport returns "bokbok".
func (nl *Netlayer) Transport() string { return Transport }

// Location returns this node's location: its Name as the designator and
// the address peers dial as the addr hint.
func (nl *Netlayer) Location() ocapn.Peer {
	loc := nl.loc
	loc.Hints = map[string]string{AddrHint: nl.loc.Hints[AddrHint]}
	return loc
}

// Addr returns the address the netlayer listens on.
func (nl *Netlayer) Addr() net.Addr { return nl.ln.Addr() }

// Accept waits for the next authenticated inbound connection and returns
// it as a *Conn. After Close it fails with an error matching
// net.ErrClosed.
func (nl *Netlayer) Accept() (net.Conn, error) {
	select {
	case <-nl.done:
		return nil, nl.closedError("accept")
	default:
	}
	select {
	case c := <-nl.backlog:
		return c, nil
	case <-nl.done:
		return nil, nl.closedError("accept")
	}
}

// Dial opens a secure bokbok connection to p, a peer on this transport,
// at the address of its addr hint: as the user Config.Name, in the realm
// p.Designator, with the keys Config.PeerKeys gives for p.Designator,
// tried in order while the peer refuses them (bokbok.ErrAuth). It
// returns the connection as a *Conn once the handshake has succeeded;
// ctx bounds dialing and the handshake.
func (nl *Netlayer) Dial(ctx context.Context, p ocapn.Peer) (net.Conn, error) {
	if p.Transport != Transport {
		return nil, fmt.Errorf("bokboknet: %s is not on transport %q", p, Transport)
	}
	addr := p.Hints[AddrHint]
	if addr == "" {
		return nil, fmt.Errorf("bokboknet: %s has no %q hint", p, AddrHint)
	}
	if len(p.Designator) == 0 || len(p.Designator) > 255 {
		return nil, fmt.Errorf("bokboknet: %s: a designator is 1 to 255 bytes", p)
	}
	select {
	case <-nl.done:
		return nil, nl.closedError("dial")
	default:
	}
	keys := nl.cfg.PeerKeys(p.Designator)
	if len(keys) == 0 {
		return nil, fmt.Errorf("bokboknet: dialing %s: no key for %q: %w", p, p.Designator, bokbok.ErrAuth)
	}
	keys = keys[:min(len(keys), bokbok.MaxUserKeys)]
	var err error
	for i := range keys {
		var c *Conn
		if c, err = nl.dial(ctx, addr, p.Designator, keys[i]); err == nil {
			return c, nil
		}
		if !errors.Is(err, bokbok.ErrAuth) {
			break
		}
	}
	return nil, fmt.Errorf("bokboknet: dialing %s: %w", p, err)
}

// dial makes one attempt with one key.
func (nl *Netlayer) dial(ctx context.Context, addr, designator string, key bokbok.Key) (*Conn, error) {
	c := newConn(designator, false, nl.cfg.ReceiveBuffer, nl.cfg.CloseTimeout)
	cfg := *nl.base
	cfg.Key, cfg.User, cfg.Realm = &key, nl.cfg.Name, designator
	cfg.Handler = bokbok.HandlerFunc(c.serve)
	cfg.OnClose = func(bc *bokbok.Conn, reason error) {
		c.onClose(reason)
		if nl.onClose != nil {
			nl.onClose(bc, reason)
		}
	}
	bc, err := bokbok.Dial(ctx, addr, &cfg)
	if err != nil {
		c.cancel(err)
		return nil, err
	}
	c.bc = bc
	return c, nil
}

// Close stops listening: Accept then fails, and the connections accepted
// and not yet taken by Accept are closed. Connections already returned by
// Accept or Dial stay open; closing them is their owner's (an ocapn.Node
// closes its sessions' connections itself). Closing a closed Netlayer
// does nothing.
func (nl *Netlayer) Close() error {
	nl.once.Do(func() {
		nl.mu.Lock()
		nl.closed = true
		nl.mu.Unlock()
		close(nl.done)
		nl.ln.Close()
		<-nl.served
		for {
			select {
			case c := <-nl.backlog:
				c.close(0)
			default:
				return
			}
		}
	})
	return nil
}

func (nl *Netlayer) closedError(op string) error {
	return &net.OpError{Op: op, Net: Transport, Addr: nl.ln.Addr(), Err: net.ErrClosed}
}

// errBacklogFull and errNetlayerClosed are the reasons an authenticated
// connection is refused.
var (
	errBacklogFull    = errors.New("bokboknet: too many connections waiting for Accept")
	errNetlayerClosed = errors.New("bokboknet: the netlayer is closed")
)

// opened is the bokbok server's OnOpen: an authenticated connection joins
// the backlog, or is refused.
func (nl *Netlayer) opened(bc *bokbok.Conn) error {
	c := newConn(bc.User(), true, nl.cfg.ReceiveBuffer, nl.cfg.CloseTimeout)
	c.bc = bc
	nl.mu.Lock()
	defer nl.mu.Unlock()
	if nl.closed {
		return errNetlayerClosed
	}
	nl.conns.Store(bc, c)
	select {
	case nl.backlog <- c:
		return nil
	default:
		nl.conns.Delete(bc)
		return errBacklogFull
	}
}

// serve is the bokbok server's Handler: each connection's own.
func (nl *Netlayer) serve(ctx context.Context, req *bokbok.Request) (any, error) {
	v, ok := nl.conns.Load(req.Conn())
	if !ok {
		return nil, errNetlayerClosed
	}
	return v.(*Conn).serve(ctx, req)
}

// connClosed is the bokbok server's OnClose.
func (nl *Netlayer) connClosed(bc *bokbok.Conn, reason error) {
	if v, ok := nl.conns.LoadAndDelete(bc); ok {
		v.(*Conn).onClose(reason)
	}
	if nl.onClose != nil {
		nl.onClose(bc, reason)
	}
}
