package pipes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bokbok-go/bokbok"
)

// NodeConfig configures a node. Dir, Hub, User and Key are required;
// every other zero field takes the default named in its comment.
type NodeConfig struct {
	// Dir holds the node's state (the file node.db), created if missing.
	// It belongs to one user and one process at a time: opening it as
	// another user fails with ErrIdentity, and while another process has
	// it open, with an error matching ErrInUse.
	Dir string

	// Hub is the hub's address (see bokbok.ParseAddr).
	Hub string

	// Hubs are the addresses of further hubs that share one log with Hub
	// (see SharedLog): when the node cannot reach one, it tries the next.
	Hubs []string

	// User and Key are the node's identity on the network: the hub's keys
	// file must give Key to User.
	User string
	Key  bokbok.Key

	// Realm is the hub's bokbok realm.
	Realm string

	// MaxOutboxBytes and MaxOutboxPackets bound the packets waiting in the
	// outbox; a Put beyond them fails with ErrOutboxFull. Defaults
	// DefaultMaxOutboxBytes and DefaultMaxOutboxPackets.
	MaxOutboxBytes   int64
	MaxOutboxPackets int

	// MaxBatch bounds the packets sent in one put and delivered between
	// two cursor commits (after a crash, at most two batches are delivered
	// again). Default DefaultMaxBatch.
	MaxBatch int

	// NoSync skips fsync of the node's database: faster, and a packet
	// whose Put returned can be lost if the machine (not only the process)
	// stops. For tests and benchmarks.
	NoSync bool

	// OnConnect and OnDisconnect, if set, are told when the node's
	// connection to the hub opens, and when it is lost or cannot be
	// opened (with the reason: a lost connection, an unreachable hub, a
	// refused key). OnDisconnect is told once per outage, not for every
	// attempt; the node keeps trying until Close. They run on the node's
	// goroutine and should return quickly.
	OnConnect    func()
	OnDisconnect func(err error)

	// OnRefused, if set, is given each packet the hub refuses for good
	// (larger than it accepts), after which the packet is removed from
	// the outbox. Nil logs it at Error level.
	OnRefused func(p RefusedPacket)

	// TrustKey, if set, is asked before the node seals an encrypted
	// pipeline's key to a member node's box key, and before it takes a
	// key sealed by one (see Node.PublicKey): returning false refuses the
	// key. Nil trusts the keys the hub forwards from members.
	TrustKey func(user string, key [32]byte) bool

	// MaxCopy bounds the packets of each encrypted pipeline that the node
	// keeps, opened, for searches; the oldest go first. Default
	// DefaultMaxCopy.
	MaxCopy int

	// Client holds the settings of the connection to the hub (backoff,
	// dialer, limits); its User, Key, Realm and OnConnect are the node's.
	Client bokbok.ClientConfig

	// Logger receives the node's log records. Nil logs nothing.
	Logger *slog.Logger
}

// RefusedPacket is a packet the hub refused for good.
type RefusedPacket struct {
	Pipeline string
	ID       PacketID
	Data     []byte
	Err      error
}

// Defaults of NodeConfig.
const (
	DefaultMaxOutboxBytes   = 256 << 20
	DefaultMaxOutboxPackets = 1 << 20
	DefaultMaxCopy          = 1 << 20
)

// Node is one member of a network: it keeps its identity, outbox and
// cursors in its directory, and stays connected to the hub (reconnecting
// with backoff) until Close. Its methods are safe for concurrent use.
type Node struct {
	cfg   NodeConfig
	store *nodeStore
	cl    *bokbok.Client
	log   *slog.Logger

	boxPub, boxPriv [32]byte // the node's box key pair, for encrypted pipelines

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the connection loop and the deliverers

	mu        sync.Mutex // guards pipelines, sess and kick
	pipelines map[string]*Pipeline
	sess      *session      // the current connection's session, nil while disconnected
	kick      chan struct{} // poked when a pipeline is added or listened to

	outboxPut chan struct{} // poked when a packet is put (capacity 1)

	closeOnce sync.Once
	closeErr  error
}

// OpenNode opens (or creates) a node's directory and starts connecting
// to the hub in the background. Put and Listen work at once, connected
// or not.
func OpenNode(cfg NodeConfig) (*Node, error) {
	if cfg.User == "" || cfg.Key == (bokbok.Key{}) || cfg.Hub == "" {
		return nil, errors.New("pipes: NodeConfig needs Hub, User and Key")
	}
	if cfg.MaxOutboxBytes <= 0 {
		cfg.MaxOutboxBytes = DefaultMaxOutboxBytes
	}
	if cfg.MaxOutboxPackets <= 0 {
		cfg.MaxOutboxPackets = DefaultMaxOutboxPackets
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.MaxCopy <= 0 {
		cfg.MaxCopy = DefaultMaxCopy
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	path, err := dataFile(cfg.Dir, "node.db")
	if err != nil {
		return nil, err
	}
	store, err := openNodeStore(path, cfg.User, cfg.MaxOutboxBytes, cfg.MaxOutboxPackets, cfg.NoSync)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, store: store, log: cfg.Logger, pipelines: map[string]*Pipeline{}, kick: make(chan struct{}, 1), outboxPut: make(chan struct{}, 1)}
	if n.boxPub, n.boxPriv, err = store.boxKeys(); err != nil {
		store.close()
		return nil, err
	}
	kinds, err := store.kinds()
	if err != nil {
		store.close()
		return nil, err
	}
	for name, kind := range kinds {
		if _, err := n.addPipeline(name, kind); err != nil {
			store.close()
			return nil, err
		}
	}
	cc := cfg.Client
	key := cfg.Key
	cc.Key, cc.User, cc.Realm = &key, cfg.User, cfg.Realm
	if cc.Logger == nil {
		cc.Logger = cfg.Logger
	}
	if len(cfg.Hubs) > 0 {
		if err := checkHubs(cfg.Hubs); err != nil {
			store.close()
			return nil, err
		}
		cc.Dial = rotateHubs(cfg.Hub, cfg.Hubs, cc.Dial)
	}
	n.cl, err = bokbok.NewClient(cfg.Hub, &cc)
	if err != nil {
		store.close()
		return nil, err
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.wg.Add(1)
	go n.connectLoop()
	return n, nil
}

// ID returns the node's ID.
func (n *Node) ID() NodeID { return n.store.id }

// User returns the node's user.
func (n *Node) User() string { return n.cfg.User }

// Connected reports whether the node is connected to the hub now.
func (n *Node) Connected() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sess != nil
}

// Outbox returns the packets and bytes waiting to be acknowledged by the
// hub.
func (n *Node) Outbox() (packets int, bytes int64) {
	p, b, _, _, _ := n.store.outbox()
	return p, b
}

// Flush waits until every packet put before the call has been
// acknowledged by the hub, or ctx ends.
func (n *Node) Flush(ctx context.Context) error {
	_, _, next, _, _ := n.store.outbox()
	for {
		// Done when the database holds nothing older than next and every
		// removal is counted (so that Outbox agrees).
		_, _, _, removing, removed := n.store.outbox()
		oldest, err := n.store.oldest()
		if err != nil {
			return err
		}
		if (oldest == 0 || oldest >= next) && removing == 0 {
			return nil
		}
		select {
		case <-removed:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.done():
			return ErrClosed
		}
	}
}

func (n *Node) done() <-chan struct{} { return n.ctx.Done() }

// PipelineOptions configures a pipeline on a node.
type PipelineOptions struct {
	// Persistent makes a persistent pipeline (see the package
	// documentation); false a transient one. A pipeline's kind is fixed
	// when it is created, on the hub and on the node.
	Persistent bool

	// OnGap, if set, is told of packets the node will never deliver (see
	// Gap). It runs on the pipeline's delivery goroutine, in order with
	// the packets. Nil logs each gap at Warn level.
	OnGap func(Gap)

	// OnError, if set, is told when the hub refuses the pipeline (for
	// example ErrForbidden or ErrKindMismatch; the node tries again on its
	// next connection, and packets put meanwhile stay in the outbox), and,
	// on an encrypted pipeline, of each packet the node cannot open
	// (ErrNoKey). Nil logs them.
	OnError func(error)

	// Members, when the pipeline is created, makes it private: only these
	// users (and the creating user, its owner) may read it, write it or
	// read its history; the hub refuses everyone else. Ignored for a
	// pipeline that exists; see Pipeline.SetMembers.
	Members []string

	// Encrypted makes the pipeline end-to-end encrypted: its members seal
	// every packet with NaCl secretbox under a pipeline key that the hub
	// never sees (see Pipeline.Rotate), so the hub stores and forwards
	// ciphertext only. An encrypted pipeline is persistent and private:
	// it needs Persistent, and Members to create it.
	Encrypted bool
}

// Pipeline opens the pipeline name, creating it if needed, on this node
// at once and on the hub when the node is connected. Opening it again
// returns the same *Pipeline; the options of the first opening stay.
func (n *Node) Pipeline(name string, opts *PipelineOptions) (*Pipeline, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	var o PipelineOptions
	if opts != nil {
		o = *opts
	}
	if o.Encrypted && !o.Persistent {
		return nil, fmt.Errorf("%w: an encrypted pipeline is persistent", ErrBadRequest)
	}
	kind := pipelineKind{Persistent: o.Persistent, Encrypted: o.Encrypted, Members: o.Members}
	if err := n.store.addPipeline(name, kind); err != nil {
		return nil, err
	}
	p, err := n.addPipeline(name, kind)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if !p.configured {
		p.configured = true
		p.onGap, p.onError = o.OnGap, o.OnError
	}
	p.mu.Unlock()
	n.poke(n.kick)
	return p, nil
}

func (n *Node) addPipeline(name string, kind pipelineKind) (*Pipeline, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.pipelines[name]; p != nil {
		if p.persistent != kind.Persistent || p.encrypted != kind.Encrypted {
			return nil, fmt.Errorf("%w: %q is %s", ErrKindMismatch, name, pipelineKind{Persistent: p.persistent, Encrypted: p.encrypted})
		}
		return p, nil
	}
	p := newPipeline(n, name, kind)
	if kind.Encrypted {
		if err := p.loadE2E(); err != nil {
			return nil, err
		}
	}
	if kind.Persistent {
		c, err := n.store.cursor(name)
		if err != nil {
			return nil, err
		}
		copy(p.epoch[:], c.Epoch)
		p.epochStored = len(c.Epoch) == len(p.epoch)
		p.delivered, p.fetched = c.Seq, c.Seq
	}
	n.pipelines[name] = p
	return p, nil
}

// poke signals a capacity-1 channel without blocking.
func (n *Node) poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (n *Node) pipelineList() []*Pipeline {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*Pipeline, 0, len(n.pipelines))
	for _, p := range n.pipelines {
		out = append(out, p)
	}
	return out
}

// Close disconnects from the hub, stops delivery (a listener call in
// progress finishes first; the cursors are committed) and closes the
// directory. Packets in the outbox stay there for the next OpenNode.
// Closing again returns the first Close's result.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.cancel()
		err := n.cl.Close()
		n.wg.Wait()
		if serr := n.store.close(); err == nil {
			err = serr
		}
		if errors.Is(err, bokbok.ErrClientClosed) {
			err = nil
		}
		n.closeErr = err
	})
	return n.closeErr
}

// connectLoop keeps the node connected: it runs one session per
// connection, until Close.
func (n *Node) connectLoop() {
	defer n.wg.Done()
	backoff := 100 * time.Millisecond
	down := false // OnDisconnect was told, and no connection opened since
	for {
		ctx, cancel := context.WithTimeout(n.ctx, connectReport)
		conn, err := n.cl.Conn(ctx)
		cancel()
		if n.ctx.Err() != nil {
			return
		}
		if err != nil {
			if !down {
				n.log.Warn("pipes: cannot reach the hub; retrying", "hub", n.cfg.Hub, "err", err)
				if n.cfg.OnDisconnect != nil {
					n.cfg.OnDisconnect(err)
				}
				down = true
			}
			select {
			case <-time.After(backoff):
			case <-n.ctx.Done():
				return
			}
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff, down = 100*time.Millisecond, false
		reason := n.runSession(conn)
		if n.ctx.Err() != nil {
			return
		}
		n.log.Info("pipes: disconnected from the hub", "hub", n.cfg.Hub, "err", reason)
		if n.cfg.OnDisconnect != nil {
			n.cfg.OnDisconnect(reason)
		}
		down = true
	}
}

// connectReport is how long the node waits for a connection before it
// reports the hub unreachable (it keeps trying).
const connectReport = 5 * time.Second
