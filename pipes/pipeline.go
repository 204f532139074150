package pipes

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bokbok-go/bokbok"
)

// Pipeline is a pipeline as one node sees it: Put sends packets on it and
// Listen receives every node's. Its methods are safe for concurrent use.
type Pipeline struct {
	n          *Node
	name       string
	persistent bool
	encrypted  bool
	create     []string // the members asked for when created

	batches chan batch // fetched, waiting for the deliverer (capacity 1)

	mu          sync.Mutex // guards the fields below
	configured  bool
	onGap       func(Gap)
	onError     func(error)
	listeners   []*listener
	delivering  bool              // the deliverer goroutine runs
	listenKick  chan struct{}     // poked when listeners are added (capacity 1)
	epoch       [16]byte          // the hub log's epoch the cursor belongs to
	gen         uint64            // incremented by every reset of the fetch position
	pendingGap  *Gap              // a reset gap the deliverer has yet to report
	gapKick     chan struct{}     // poked when pendingGap is set (capacity 1)
	delivered   uint64            // last Seq given to the listeners (persistent: the cursor)
	fetched     uint64            // last Seq queued for the deliverer
	maxPacket   int               // the hub's limit, once known
	epochStored bool              // the cursor on disk names epoch
	acked       uint64            // the highest packet number the hub acknowledged in this process
	members     []string          // sorted, as the hub last said; nil before it opened the pipeline
	e2e         *e2eState         // an encrypted pipeline's keys and member nodes
	sealedTo    map[[32]byte]bool // the nodes known to hold the current key

	waiting []storedPacket // sealed packets of this batch waiting for their key; the deliverer's own

	committing chan struct{} // closed when the cursor commit in flight is done; the deliverer's own
}

// batch is what one read returned, and the generation of the fetch
// position it was read from.
type batch struct {
	gen     uint64
	gap     *Gap
	packets []storedPacket
}

type listener struct {
	fn      func(Packet)
	stopped atomic.Bool
}

var transientN atomic.Uint64

func init() { transientN.Store(uint64(time.Now().UnixNano())) }

func newPipeline(n *Node, name string, kind pipelineKind) *Pipeline {
	return &Pipeline{n: n, name: name, persistent: kind.Persistent, encrypted: kind.Encrypted, create: kind.Members, batches: make(chan batch, 1), listenKick: make(chan struct{}, 1), gapKick: make(chan struct{}, 1), maxPacket: DefaultMaxPacketSize}
}

// Name returns the pipeline's name.
func (p *Pipeline) Name() string { return p.name }

// Persistent reports whether the pipeline is persistent.
func (p *Pipeline) Persistent() bool { return p.persistent }

// Put puts a packet on the pipeline and returns its ID. On a persistent
// pipeline it returns once the packet is on disk in the node's outbox,
// connected or not; the node sends it when it can. On a transient one it
// returns once the hub has it, and fails with an error matching
// bokbok.ErrNotConnected while the node is not connected. Put does not
// keep data.
func (p *Pipeline) Put(ctx context.Context, data []byte) (PacketID, error) {
	limit := p.maxPacketSize()
	if p.encrypted {
		limit -= sealedOverhead
	}
	if len(data) > limit {
		return PacketID{}, fmt.Errorf("%w: %d bytes; the hub accepts %d", ErrTooLarge, len(data), limit)
	}
	if err := ctx.Err(); err != nil {
		return PacketID{}, err
	}
	if p.persistent {
		var err error
		if p.encrypted {
			data, err = p.sealPut(data)
		} else {
			data = append([]byte(nil), data...)
		}
		if err != nil {
			return PacketID{}, err
		}
		n, err := p.n.store.put(p.name, data)
		if err != nil {
			return PacketID{}, err
		}
		p.n.poke(p.n.outboxPut)
		return PacketID{Node: p.n.store.id, N: n}, nil
	}
	return p.putTransient(ctx, data)
}

func (p *Pipeline) maxPacketSize() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxPacket
}

func (p *Pipeline) putTransient(ctx context.Context, data []byte) (PacketID, error) {
	p.n.mu.Lock()
	s := p.n.sess
	p.n.mu.Unlock()
	if s == nil {
		return PacketID{}, fmt.Errorf("pipes: %q: %w", p.name, bokbok.ErrNotConnected)
	}
	if _, ok := s.reply(p); !ok {
		if err := s.open(p); err != nil {
			return PacketID{}, err
		}
		if _, ok := s.reply(p); !ok {
			if err := s.refusal(p); err != nil {
				return PacketID{}, err
			}
			return PacketID{}, fmt.Errorf("pipes: %q: %w", p.name, bokbok.ErrNotConnected)
		}
	}
	id := PacketID{Node: p.n.store.id, N: transientN.Add(1)}
	var reply putReply
	err := s.conn.Invoke(ctx, methodPut, putRequest{Pipeline: p.name, Node: id.Node[:], Packets: []wirePacket{{N: id.N, Data: data}}}, &reply)
	if err != nil {
		return PacketID{}, hubError(err)
	}
	return id, nil
}

// Listen adds fn to the pipeline's listeners and returns a function that
// removes it. Every packet is given to each listener in turn, in the
// hub's order, on the pipeline's own goroutine: a listener that takes its
// time holds back the pipeline's delivery (and, through it, the hub),
// never the node's other pipelines. A persistent pipeline's packets are
// delivered from the node's cursor, so the first Listen of a process
// catches up on every packet not yet delivered; while no listener is
// added, the cursor stays where it is. A transient pipeline delivers the
// packets put while the node is connected and listening. After stop
// returns, fn is not called again, except for a call already in progress.
func (p *Pipeline) Listen(fn func(Packet)) (stop func()) {
	l := &listener{fn: fn}
	p.mu.Lock()
	p.listeners = append(p.listeners, l)
	start := !p.delivering
	p.delivering = true
	p.mu.Unlock()
	if start {
		p.n.wg.Add(1)
		go p.deliverLoop()
	}
	p.n.poke(p.listenKick)
	p.n.poke(p.n.kick)
	return func() {
		l.stopped.Store(true)
		p.mu.Lock()
		defer p.mu.Unlock()
		for i, x := range p.listeners {
			if x == l {
				p.listeners = append(p.listeners[:i:i], p.listeners[i+1:]...)
				break
			}
		}
	}
}

func (p *Pipeline) listening() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delivering
}

func (p *Pipeline) reportError(err error) {
	p.mu.Lock()
	f := p.onError
	p.mu.Unlock()
	if f != nil {
		f(err)
	}
}

// hubOpened takes the hub's description of the pipeline at the start of
// a session: the fetch position of a transient pipeline starts at the
// hub's last packet; a persistent pipeline's cursor is checked against
// the hub's log.
func (p *Pipeline) hubOpened(r openReply) error {
	var gap *Gap
	p.mu.Lock()
	if r.MaxPacket > 0 {
		p.maxPacket = r.MaxPacket
	}
	p.members = slices.Clone(r.Members)
	slices.Sort(p.members)
	var epoch [16]byte
	copy(epoch[:], r.Epoch)
	switch {
	case !p.persistent:
		// Seqs may start again (a restarted hub): a new generation.
		p.gen++
		p.fetched = r.Last
	case p.epoch == [16]byte{}:
		p.epoch = epoch
	case p.epoch != epoch:
		// The hub's log was created anew: the cursor means nothing there.
		if p.delivered > 0 {
			gap = &Gap{Pipeline: p.name, From: 1, To: p.delivered, Reason: GapReset}
		}
		p.gen++
		p.epoch, p.delivered, p.fetched = epoch, 0, 0
	case p.fetched > r.Last:
		// The hub lost the end of its log (restored from an older copy):
		// its next packets will reuse the Seqs this node has seen.
		gap = &Gap{Pipeline: p.name, From: r.Last + 1, To: p.fetched, Reason: GapReset}
		p.gen++
		p.delivered, p.fetched = min(p.delivered, r.Last), r.Last
	}
	first := p.persistent && !p.epochStored
	p.epochStored = true
	cur := cursorValue{Epoch: append([]byte(nil), p.epoch[:]...), Seq: p.delivered}
	listening := p.delivering
	if gap != nil && listening {
		p.pendingGap = gap // the deliverer reports it, then commits
	}
	p.mu.Unlock()
	if !p.persistent {
		return nil
	}
	if p.encrypted {
		if err := p.e2eOpened(r); err != nil {
			return err
		}
	}
	if gap == nil {
		if first { // record which log the cursor belongs to
			return p.n.store.setCursor(p.name, cur)
		}
		return nil
	}
	// The new cursor is committed only once the gap has been reported,
	// so that a crash in between reports it again rather than never.
	p.n.log.Warn("pipes: the hub's log no longer matches this node's cursor", "pipeline", p.name, "from", gap.From, "to", gap.To)
	if listening {
		p.n.poke(p.gapKick)
		return nil
	}
	p.callGap(*gap)
	return p.n.store.setCursor(p.name, cur)
}

// ackedUpTo returns the highest packet number the hub acknowledged.
func (p *Pipeline) ackedUpTo() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acked
}

func (p *Pipeline) setAcked(n uint64) {
	p.mu.Lock()
	p.acked = max(p.acked, n)
	p.mu.Unlock()
}

// fetchPosition returns where the next read starts, and the generation
// the reply will belong to.
func (p *Pipeline) fetchPosition() (gen, after uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen, p.fetched
}

// queue hands a batch to the deliverer, waiting while it is busy, and
// moves the fetch position past it: past its last packet, or past its gap
// when it has no packet.
func (p *Pipeline) queue(ctx context.Context, b batch) bool {
	select {
	case p.batches <- b:
	case <-ctx.Done():
		return false
	}
	p.mu.Lock()
	if b.gen == p.gen {
		end := uint64(0)
		if n := len(b.packets); n > 0 {
			end = b.packets[n-1].Seq
		} else if b.gap != nil {
			end = b.gap.To
		}
		p.fetched = max(p.fetched, end)
	}
	p.mu.Unlock()
	return true
}

// waitListeners waits until the pipeline has a listener; false when the
// node closes first.
func (p *Pipeline) waitListeners() bool {
	for {
		p.mu.Lock()
		has := len(p.listeners) > 0
		p.mu.Unlock()
		if has {
			return true
		}
		select {
		case <-p.listenKick:
		case <-p.n.done():
			return false
		}
	}
}

// deliverLoop gives the queued batches to the listeners and commits the
// cursor after each; it ends when the node closes. A batch fetched before
// a reset (an older generation) is dropped.
func (p *Pipeline) deliverLoop() {
	defer p.n.wg.Done()
	defer p.waitCommit()
	for p.waitListeners() {
		var b batch
		have := false
		select {
		case b = <-p.batches:
			have = true
		case <-p.gapKick:
		case <-p.n.done():
			return
		}
		p.mu.Lock()
		reset := p.pendingGap
		p.pendingGap = nil
		p.mu.Unlock()
		if reset != nil {
			p.callGap(*reset)
			p.commit(p.currentGen())
		}
		if have {
			p.deliver(b)
		}
	}
}

func (p *Pipeline) currentGen() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen
}

// deliver gives one batch to the listeners, then commits the cursor.
func (p *Pipeline) deliver(b batch) {
	if b.gen != p.currentGen() {
		return
	}
	moved := false
	var copies []storedPacket // an encrypted pipeline's packets, opened
	if b.gap != nil {
		p.callGap(*b.gap)
		p.mu.Lock()
		if b.gen == p.gen && b.gap.To > p.delivered {
			p.delivered, moved = b.gap.To, true // the missed packets are behind us
		}
		p.mu.Unlock()
	}
	for _, sp := range b.packets {
		if p.n.ctx.Err() != nil {
			break
		}
		p.mu.Lock()
		stale := b.gen != p.gen || p.persistent && sp.Seq <= p.delivered
		ls := append([]*listener(nil), p.listeners...)
		p.mu.Unlock()
		if stale {
			continue
		}
		give := []storedPacket{sp}
		if p.encrypted {
			give = p.openDelivered(sp)
			copies = append(copies, give...)
		}
		for _, sp := range give {
			pk := p.packet(sp)
			for _, l := range ls {
				if !l.stopped.Load() {
					l.fn(pk)
				}
			}
		}
		p.mu.Lock()
		if b.gen == p.gen {
			p.delivered, moved = sp.Seq, true
		}
		p.mu.Unlock()
	}
	p.flushWaiting()
	if len(copies) > 0 {
		p.n.store.saveCopiesAsync(p.name, copies, p.n.cfg.MaxCopy, func(err error) {
			if err != nil && !errors.Is(err, ErrClosed) {
				p.n.log.Error("pipes: keeping the opened packets failed", "pipeline", p.name, "err", err)
			}
		})
	}
	if moved && p.persistent {
		p.commit(b.gen)
	}
}

// commit records the cursor on disk, unless a reset began a newer
// generation meanwhile (its gap commits then), and returns at once: the
// next batch is delivered while the commit is written. At most one
// commit is in flight: a second waits for the first. Only the deliverer
// calls it.
func (p *Pipeline) commit(gen uint64) {
	p.waitCommit()
	p.mu.Lock()
	if gen != p.gen || p.pendingGap != nil {
		p.mu.Unlock()
		return
	}
	cur := cursorValue{Epoch: append([]byte(nil), p.epoch[:]...), Seq: p.delivered}
	p.mu.Unlock()
	done := make(chan struct{})
	p.committing = done
	p.n.store.setCursorAsync(p.name, cur, func(err error) {
		if err != nil && !errors.Is(err, ErrClosed) {
			p.n.log.Error("pipes: committing the cursor failed", "pipeline", p.name, "err", err)
		}
		close(done)
	})
}

// waitCommit waits for the commit in flight, if any.
func (p *Pipeline) waitCommit() {
	if p.committing != nil {
		<-p.committing
		p.committing = nil
	}
}

func (p *Pipeline) callGap(g Gap) {
	p.mu.Lock()
	f := p.onGap
	p.mu.Unlock()
	if f != nil {
		f(g)
		return
	}
	p.n.log.Warn("pipes: packets missed", "pipeline", g.Pipeline, "from", g.From, "to", g.To, "reason", g.Reason.String())
}

func (p *Pipeline) packet(sp storedPacket) Packet {
	pk := Packet{Pipeline: p.name, Seq: sp.Seq, Time: time.Unix(0, sp.Time), Sender: sp.Sender, Data: sp.Data}
	copy(pk.ID.Node[:], sp.Node)
	pk.ID.N = sp.N
	pk.Own = pk.ID.Node == p.n.store.id
	return pk
}
