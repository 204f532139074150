package pipes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bokbok-go/bokbok"
)

// Access is what a node asks to do with a pipeline.
type Access int

const (
	AccessCreate Access = iota + 1 // create a pipeline that does not exist
	AccessWrite                    // put packets
	AccessRead                     // read packets
)

// String names the access.
func (a Access) String() string {
	switch a {
	case AccessCreate:
		return "create"
	case AccessWrite:
		return "write"
	case AccessRead:
		return "read"
	}
	return "unknown"
}

// HubConfig configures a hub. UserKeys and one of Dir or Log are
// required; every other zero field takes the default named in its
// comment.
type HubConfig struct {
	// Dir holds the hub's embedded log (the file hub.db) and its search
	// index (index.db, rebuilt from the log if lost), created if missing.
	// With Log set, Dir is optional and holds only the index.
	Dir string

	// Log, if set, stores the pipelines instead of the embedded log in
	// Dir. The hub does not close it.
	Log Log

	// NoSearch turns the search index off: searches fail with ErrStorage.
	NoSearch bool

	// SearchText returns the text of a packet that searches find it by.
	// Nil indexes the packet's data if it is UTF-8 text, or the string
	// values of a JSON object.
	SearchText func(pipeline string, data []byte) string

	// SearchPostings bounds the packets one search ranks per query word:
	// for a word found in more packets, the newest are ranked. Default
	// DefaultSearchPostings.
	SearchPostings int

	// Retention bounds the persistent pipelines' logs of Dir's log.
	Retention Retention

	// MaxSenders bounds the senders Dir's log remembers per pipeline to
	// drop duplicates; see BoltLogConfig.MaxSenders. Default
	// DefaultMaxSenders.
	MaxSenders int

	// MaxSize, if positive, bounds Dir's database file; a put that would
	// grow it further fails with an error matching ErrFull and the node
	// keeps the packets to send again.
	MaxSize int

	// NoSync makes Dir's log skip fsync; see BoltLogConfig.NoSync.
	NoSync bool

	// UserKeys returns the keys of a user, none for an unknown one (a
	// bokbok.KeysFile's UserKeys method fits). Nodes connect in secure
	// mode only.
	UserKeys func(user string) []bokbok.Key

	// Realm is the bokbok realm of the hub; nodes must use the same.
	Realm string

	// Authorize, if set, is asked before a user creates a pipeline, puts
	// packets on it or reads it; an error refuses the request with
	// ErrForbidden. It is called for every request, from many goroutines.
	// Nil allows every authenticated user everything.
	Authorize func(user, pipeline string, access Access) error

	// MaxPacketSize bounds the data of one packet. Default
	// DefaultMaxPacketSize.
	MaxPacketSize int

	// MaxBatch bounds the packets of one put and of one read's reply.
	// Default DefaultMaxBatch.
	MaxBatch int

	// MaxReadBytes bounds the packets of one read's reply beyond its
	// first, as encoded (about 70 bytes more than their data). Default
	// DefaultMaxReadBytes.
	MaxReadBytes int

	// MaxPipelines bounds the pipelines the hub holds; creating more fails
	// with ErrLimit. Default DefaultMaxPipelines.
	MaxPipelines int

	// MaxReadsPerConn bounds the reads one connection may have in progress
	// (each waits up to MaxWait for a packet); more fail with ErrLimit.
	// Default DefaultMaxReadsPerConn.
	MaxReadsPerConn int

	// MaxWait bounds how long a read waits for a packet before it returns
	// none. Default DefaultMaxWait.
	MaxWait time.Duration

	// TransientWindow and TransientBytes bound what a transient pipeline
	// holds for nodes between two reads; a node that falls further behind
	// is told of a gap. TransientMemory bounds it for all transient
	// pipelines together; a put beyond it fails with ErrLimit. Defaults
	// DefaultTransientWindow, DefaultTransientBytes and
	// DefaultTransientMemory.
	TransientWindow int
	TransientBytes  int
	TransientMemory int64

	// Conn holds the settings of every connection; its Handler and
	// OnClose are the hub's own. The hub sets its MaxMessageSize to fit a
	// put of MaxPacketSize if it is smaller.
	Conn bokbok.Config

	// Logger receives the hub's log records. Nil logs nothing.
	Logger *slog.Logger
}

func (c *HubConfig) setDefaults() {
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&c.MaxPacketSize, DefaultMaxPacketSize)
	def(&c.MaxBatch, DefaultMaxBatch)
	def(&c.MaxReadBytes, DefaultMaxReadBytes)
	def(&c.MaxPipelines, DefaultMaxPipelines)
	def(&c.MaxReadsPerConn, DefaultMaxReadsPerConn)
	def(&c.TransientWindow, DefaultTransientWindow)
	def(&c.TransientBytes, DefaultTransientBytes)
	def(&c.SearchPostings, DefaultSearchPostings)
	if c.SearchText == nil {
		c.SearchText = searchText
	}
	if c.TransientMemory <= 0 {
		c.TransientMemory = DefaultTransientMemory
	}
	if c.MaxWait <= 0 {
		c.MaxWait = DefaultMaxWait
	}
	if need := c.MaxPacketSize + putBatchBytes + 64<<10; c.Conn.MaxMessageSize < need {
		c.Conn.MaxMessageSize = need
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Hub serves a network's nodes: it authenticates them, keeps the
// pipelines' logs and hands every node the packets of the pipelines it
// reads. It owns a bokbok server and, unless given a Log, its embedded
// log.
type Hub struct {
	cfg       HubConfig
	log       Log
	ownLog    bool
	shared    bool         // log is a SharedLog: other hubs use it too
	stopWatch func()       // ends the SharedLog's Watch
	index     *searchIndex // nil without one
	srv       bokbok.Server

	mu        sync.Mutex // guards pipelines, reads and creating
	pipelines map[string]*hubPipeline
	reads     map[any]int // reads in progress per connection
	creating  int         // pipelines being created

	transientBytes atomic.Int64
	quit           chan struct{}
	ending         chan struct{} // closed when shutdown begins: reads stop waiting
	endOnce        sync.Once
	trimDone       chan struct{}
	closeOnce      sync.Once
}

// hubPipeline is a pipeline as the hub holds it in memory.
type hubPipeline struct {
	info PipelineInfo // as created; its members are in members
	ring *ring        // transient pipelines of a hub's own log only

	mu      sync.Mutex    // guards notify, members and stale
	notify  chan struct{} // closed when a packet is appended, then replaced
	members []string      // sorted; none for an open pipeline
	stale   bool          // another hub changed the members: read them again
}

func (p *hubPipeline) memberList() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.members
}

func (p *hubPipeline) setMembers(ms []string) {
	p.mu.Lock()
	p.members, p.stale = ms, false
	p.mu.Unlock()
}

func (p *hubPipeline) changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.notify
}

func (p *hubPipeline) wake() {
	p.mu.Lock()
	close(p.notify)
	p.notify = make(chan struct{})
	p.mu.Unlock()
}

// NewHub opens a hub's storage and prepares its server; Serve or Run then
// accept nodes.
func NewHub(cfg HubConfig) (*Hub, error) {
	if cfg.UserKeys == nil {
		return nil, errors.New("pipes: HubConfig.UserKeys is required")
	}
	cfg.setDefaults()
	h := &Hub{cfg: cfg, log: cfg.Log, pipelines: map[string]*hubPipeline{}, reads: map[any]int{}, quit: make(chan struct{}), ending: make(chan struct{}), trimDone: make(chan struct{})}
	if h.log == nil {
		path, err := dataFile(cfg.Dir, "hub.db")
		if err != nil {
			return nil, err
		}
		l, err := OpenBoltLog(BoltLogConfig{Path: path, Retention: cfg.Retention, MaxSenders: cfg.MaxSenders, MaxSize: cfg.MaxSize, NoSync: cfg.NoSync})
		if err != nil {
			return nil, err
		}
		h.log, h.ownLog = l, true
	}
	sl, shared := h.log.(SharedLog)
	h.shared = shared
	infos, err := h.log.Pipelines(context.Background())
	if err != nil {
		h.closeLog()
		return nil, err
	}
	for _, in := range infos {
		h.pipelines[in.Name] = h.newPipeline(in)
	}
	if !cfg.NoSearch && cfg.Dir != "" {
		path, err := dataFile(cfg.Dir, "index.db")
		if err == nil {
			h.index, err = openSearchIndex(path, h.log, cfg.SearchText)
		}
		if err != nil {
			h.closeLog()
			return nil, err
		}
	}
	if shared {
		h.stopWatch = sl.Watch(h.watched)
	}
	conn := cfg.Conn
	conn.Handler = h.mux()
	userOnClose := cfg.Conn.OnClose
	conn.OnClose = func(c *bokbok.Conn, reason error) {
		h.mu.Lock()
		delete(h.reads, c)
		h.mu.Unlock()
		if userOnClose != nil {
			userOnClose(c, reason)
		}
	}
	if conn.Logger == nil {
		conn.Logger = cfg.Logger
	}
	h.srv = bokbok.Server{Config: conn, UserKeys: cfg.UserKeys}
	go h.trimLoop()
	return h, nil
}

func (h *Hub) newPipeline(in PipelineInfo) *hubPipeline {
	p := &hubPipeline{info: in, notify: make(chan struct{}), members: in.Members}
	if !in.Persistent && !h.shared {
		p.ring = newRing(h.cfg.TransientWindow, h.cfg.TransientBytes, &h.transientBytes, h.cfg.TransientMemory)
	}
	return p
}

// trimLoop applies the retention's MaxAge; it ends when the hub closes.
func (h *Hub) trimLoop() {
	defer close(h.trimDone)
	every := h.cfg.Retention.MaxAge / 4
	if every <= 0 || h.cfg.Log != nil {
		return
	}
	every = min(max(every, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-h.quit:
			return
		case now := <-t.C:
			if err := h.log.Trim(context.Background(), now); err != nil {
				h.cfg.Logger.Error("pipes: trimming the log failed", "err", err)
			}
		}
	}
}

// Serve accepts nodes on ln until the hub is closed.
func (h *Hub) Serve(ln net.Listener) error { return h.srv.Serve(ln) }

// Run serves ln until ctx ends, then shuts down: connections get grace to
// finish their calls. The log is closed when Run returns.
func (h *Hub) Run(ctx context.Context, ln net.Listener, grace time.Duration) error {
	stop := context.AfterFunc(ctx, h.endReads)
	defer stop()
	err := h.srv.Run(ctx, ln, grace)
	if cerr := h.Close(); err == nil {
		err = cerr
	}
	return err
}

// Shutdown stops the hub gracefully: it stops accepting, ends the reads
// waiting for packets (they return what they have, nothing), lets calls
// in progress finish until ctx ends, then closes as Close does.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.endReads()
	err := h.srv.Shutdown(ctx)
	if cerr := h.Close(); err == nil {
		err = cerr
	}
	return err
}

// endReads makes waiting reads return at once, and later ones not wait.
func (h *Hub) endReads() {
	h.endOnce.Do(func() { close(h.ending) })
}

// Close closes every connection and the hub's embedded log.
func (h *Hub) Close() error {
	var err error
	h.closeOnce.Do(func() {
		h.endReads()
		close(h.quit)
		err = h.srv.Close()
		h.srv.Wait()
		if h.stopWatch != nil {
			h.stopWatch()
		}
		if h.index != nil {
			if cerr := h.index.close(); err == nil {
				err = cerr
			}
		}
		<-h.trimDone
		if cerr := h.closeLog(); err == nil {
			err = cerr
		}
	})
	return err
}

func (h *Hub) closeLog() error {
	if h.ownLog {
		return h.log.Close()
	}
	return nil
}

// watched takes a change another hub (or this one) made to a shared log:
// reads of the pipeline look again, and changed members are read again
// at the next request. A pipeline this hub has not seen yet is looked up
// when a node first asks for it.
func (h *Hub) watched(c Change) {
	h.mu.Lock()
	p := h.pipelines[c.Pipeline]
	h.mu.Unlock()
	if p == nil {
		return
	}
	if c.Meta {
		p.mu.Lock()
		p.stale = true
		p.mu.Unlock()
	} else if h.index != nil && p.info.Persistent {
		h.index.changed(c.Pipeline)
	}
	p.wake()
}

// lookup returns the pipeline name: as this hub holds it, or, with a
// shared log, as the log has it (another hub created it, or changed its
// members).
func (h *Hub) lookup(ctx context.Context, name string) (*hubPipeline, error) {
	h.mu.Lock()
	p := h.pipelines[name]
	h.mu.Unlock()
	if p != nil {
		p.mu.Lock()
		stale := p.stale
		p.mu.Unlock()
		if !stale {
			return p, nil
		}
	}
	if !h.shared {
		return nil, fmt.Errorf("%w: %q", ErrUnknownPipeline, name)
	}
	in, err := h.log.Info(ctx, name)
	if err != nil {
		return nil, err
	}
	if p != nil {
		p.setMembers(in.Members)
		return p, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if p = h.pipelines[name]; p == nil {
		p = h.newPipeline(in)
		h.pipelines[name] = p
	}
	return p, nil
}

// authorize asks the configured Authorize.
func (h *Hub) authorize(user, pipeline string, a Access) error {
	if h.cfg.Authorize == nil {
		return nil
	}
	if err := h.cfg.Authorize(user, pipeline, a); err != nil {
		return fmt.Errorf("%w: %s %q: %v", ErrForbidden, a, pipeline, err)
	}
	return nil
}
