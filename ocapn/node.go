package ocapn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// Config holds a Node's limits; a zero field takes its default. Each bounds
// what one session's peer can make the node hold.
type Config struct {
	// MaxExports bounds the objects and promises one session has exported
	// and not had collected (op:gc-export); beyond it, a result or
	// argument that would export more breaks its message. Default 16384.
	MaxExports int
	// MaxImports bounds the peer's objects and promises one session holds;
	// a peer that sends more aborts its session. Default 16384.
	MaxImports int
	// MaxAnswers bounds the answer positions a peer has open (its
	// pipelined questions, until op:gc-answer); beyond it, the session is
	// aborted. Default 16384.
	MaxAnswers int
	// MaxWaiting bounds the peer's messages sent to promises of this node
	// that have not settled (each waits, holding its arguments, until its
	// promise settles, even if the session has ended by then); beyond it,
	// the session is aborted. Default 4096.
	MaxWaiting int
	// MaxPending bounds the peer's messages received and not yet handled;
	// the node stops reading from the peer until it has handled some.
	// Default 256.
	MaxPending int
	// MaxQueued bounds the messages waiting to be written to the peer; a
	// peer that lets more pile up has its session aborted. Default 4096.
	MaxQueued int
	// MaxGifts bounds, per session, each of: the gifts its peer deposited
	// and no one withdrew, the peer's withdrawals waiting for their gifts,
	// the handoffs the peer gave this node that are in progress, and the
	// handoff counts the peer used out of order. Beyond it, the message
	// breaks. Default 1024.
	MaxGifts int
	// MaxSessions bounds the node's connections, inbound and outbound,
	// from the moment one is accepted or dialed until it is closed; a
	// connection accepted beyond it is closed at once, a dial beyond it
	// fails. Default 1024.
	MaxSessions int
	// HandshakeTimeout bounds the wait for the peer's op:start-session.
	// Default 10 s.
	HandshakeTimeout time.Duration
	// Syrup bounds each message (see syrup.Limits).
	Syrup syrup.Limits
	// Logger, if set, is told why sessions end.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MaxExports, 16384)
	def(&c.MaxImports, 16384)
	def(&c.MaxAnswers, 16384)
	def(&c.MaxPending, 256)
	def(&c.MaxWaiting, 4096)
	def(&c.MaxQueued, 4096)
	def(&c.MaxGifts, 1024)
	def(&c.MaxSessions, 1024)
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	return c
}

// Node is an OCapN peer: it serves sessions on its netlayers, hands the
// objects registered under swiss numbers to whoever fetches them, and
// opens sessions to other peers (Enliven).
//
// A node runs one event loop goroutine, on which every Object's Deliver,
// every promise callback and all session state run, one at a time. Its
// methods may be called from any goroutine.
type Node struct {
	cfg Config

	mu        sync.Mutex    // guards queue and closed
	queue     []func()      // work for the loop, in order
	wake      chan struct{} // capacity 1: work was queued
	closed    bool
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	wg        sync.WaitGroup

	// owned by the loop
	objects   map[string]Object
	sessions  map[string]*session // by peer key: established, or opened by us and opening
	netlayers map[string]Netlayer // by transport: the one used to dial
	served    []Netlayer          // every netlayer added, closed by Close
	all       map[*session]struct{}
	byID      map[string]*session // established sessions by session ID

	live atomic.Int64 // connections of sessions, from start until their reader ends
}

// NewNode returns a node with cfg's limits and starts its event loop;
// Close stops it.
func NewNode(cfg Config) *Node {
	n := &Node{
		cfg:       cfg.withDefaults(),
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		objects:   make(map[string]Object),
		sessions:  make(map[string]*session),
		netlayers: make(map[string]Netlayer),
		all:       make(map[*session]struct{}),
		byID:      make(map[string]*session),
	}
	n.wg.Add(1)
	go n.loop()
	return n
}

// post queues f for the event loop. Work posted after Close is dropped.
// The queue is not bounded: only the node's own code posts directly; a
// peer's messages wait for a slot of Config.MaxPending before they are
// posted.
func (n *Node) post(f func()) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.queue = append(n.queue, f)
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// loop is the event loop: it runs posted work in order until Close.
func (n *Node) loop() {
	defer n.wg.Done()
	for {
		n.mu.Lock()
		work := n.queue
		n.queue = nil
		closed := n.closed
		n.mu.Unlock()
		for i, f := range work {
			f()
			work[i] = nil
		}
		if closed && len(work) == 0 {
			return
		}
		if len(work) == 0 {
			select {
			case <-n.wake:
			case <-n.done:
			}
		}
	}
}

// Register makes obj what fetching swiss from this node's bootstrap
// object gives (a sturdyref names it: see Sturdyref).
func (n *Node) Register(swiss []byte, obj Object) {
	key := string(swiss)
	n.post(func() { n.objects[key] = obj })
}

// AddNetlayer serves sessions on nl and, if it is the first netlayer of
// its transport, uses it to reach peers on that transport, until Close
// (which closes nl).
func (n *Node) AddNetlayer(nl Netlayer) {
	n.post(func() {
		if _, ok := n.netlayers[nl.Transport()]; !ok {
			n.netlayers[nl.Transport()] = nl
		}
		n.served = append(n.served, nl)
	})
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			c, err := nl.Accept()
			if err != nil {
				select {
				case <-n.done:
					return
				default:
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				n.logf("ocapn: accept stopped", "transport", nl.Transport(), "err", err)
				return
			}
			n.startSession(c, nl, nil)
		}
	}()
}

// Sturdyref returns a sturdyref for the object registered under swiss,
// at this node's location on the netlayer of transport.
func (n *Node) Sturdyref(ctx context.Context, transport string, swiss []byte) (Sturdyref, error) {
	type result struct {
		loc Peer
		ok  bool
	}
	ch := make(chan result, 1)
	n.post(func() {
		nl, ok := n.netlayers[transport]
		var loc Peer
		if ok {
			loc = nl.Location()
		}
		ch <- result{loc, ok}
	})
	select {
	case r := <-ch:
		if !r.ok {
			return Sturdyref{}, fmt.Errorf("ocapn: no netlayer for transport %q", transport)
		}
		return Sturdyref{Peer: r.loc, Swiss: append([]byte(nil), swiss...)}, nil
	case <-ctx.Done():
		return Sturdyref{}, ctx.Err()
	}
}

// Enliven returns a promise for a reference to the object sr names: it
// opens a session to sr's peer (or uses the one open) and fetches the
// object from the peer's bootstrap object. Wait on the promise from
// outside the node; an object may return it.
func (n *Node) Enliven(sr Sturdyref) *Promise {
	p, r := n.NewPromise()
	swiss := append([]byte(nil), sr.Swiss...)
	n.post(func() {
		n.withSession(sr.Peer, func(s *session, err error) {
			if err != nil {
				r.Break(err)
				return
			}
			r.Fulfill(s.bootstrapRef().Deliver(sym("fetch"), swiss))
		})
	})
	return p
}

// withSession runs f, on the loop, with the session to peer: the one
// established, or one opened for it. On the loop.
func (n *Node) withSession(peer Peer, f func(*session, error)) {
	key := peerKey(peer)
	if s := n.sessions[key]; s != nil {
		s.whenReady(f)
		return
	}
	nl, ok := n.netlayers[peer.Transport]
	if !ok {
		f(nil, fmt.Errorf("ocapn: no netlayer for transport %q", peer.Transport))
		return
	}
	s, err := n.newSession(nl, &peer)
	if err != nil {
		f(nil, err)
		return
	}
	n.sessions[key] = s
	s.whenReady(f)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.HandshakeTimeout)
		defer cancel()
		c, err := nl.Dial(ctx, peer)
		if err != nil {
			n.post(func() { s.end(fmt.Errorf("ocapn: dialing %s: %w", peer, err), false) })
			return
		}
		n.startSession(c, nl, s)
	}()
}

// peerKey identifies a peer among the node's sessions.
func peerKey(p Peer) string { return p.Transport + "\x00" + p.Designator }

// Close aborts every session, closes the netlayers and stops the event
// loop, and waits for the node's goroutines. Calling it again waits too.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		finished := make(chan struct{})
		n.post(func() {
			for s := range n.all {
				s.abort("node shutting down")
			}
			for _, nl := range n.served {
				nl.Close()
			}
			close(finished)
		})
		select {
		case <-finished:
		case <-time.After(5 * time.Second): // an object's Deliver is stuck
		}
		n.mu.Lock()
		n.closed = true
		n.mu.Unlock()
		close(n.done)
	})
	n.wg.Wait()
	return nil
}

func (n *Node) logf(msg string, args ...any) {
	if n.cfg.Logger != nil {
		n.cfg.Logger.Warn(msg, args...)
	}
}
