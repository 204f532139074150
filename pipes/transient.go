package pipes

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ring holds the latest packets of a transient pipeline, so that a node
// between two reads does not miss what was put meanwhile. It holds at
// most window packets and windowBytes of data (but always the last one
// put), and all rings of a hub together at most the hub's TransientMemory:
// a put that does not fit even after dropping all of its own pipeline's
// older packets is refused with ErrLimit.
type ring struct {
	mu          sync.Mutex // guards the fields below
	recs        []storedPacket
	bytes       int
	last        uint64 // Seq of the last packet put; 0 before the first
	window      int
	windowBytes int
	budget      *atomic.Int64 // bytes held by all rings of the hub
	maxBudget   int64
}

func newRing(window, windowBytes int, budget *atomic.Int64, maxBudget int64) *ring {
	return &ring{window: window, windowBytes: windowBytes, budget: budget, maxBudget: maxBudget}
}

// put appends the packets, giving each the next Seq and the time now:
// all of them, dropping the ring's oldest to make room, or none (ErrLimit)
// if the hub's budget cannot hold them even then.
func (r *ring) put(sender Sender, entries []Entry) ([]Ack, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var need int64
	for _, e := range entries {
		need += int64(len(e.Data))
	}
	if r.budget.Load()-int64(r.bytes)+need > r.maxBudget {
		// Not even with all of this pipeline's packets dropped: keep them.
		return nil, fmt.Errorf("%w: the hub holds %d bytes of transient packets", ErrLimit, r.maxBudget)
	}
	for len(r.recs) > 0 && (len(r.recs)+len(entries) > r.window || int64(r.bytes)+need > int64(r.windowBytes) || r.budget.Load()+need > r.maxBudget) {
		r.dropOldest()
	}
	if r.budget.Load()+need > r.maxBudget {
		return nil, fmt.Errorf("%w: the hub holds %d bytes of transient packets", ErrLimit, r.maxBudget)
	}
	acks := make([]Ack, 0, len(entries))
	now := time.Now()
	for _, e := range entries {
		r.last++
		r.recs = append(r.recs, storedPacket{Seq: r.last, Time: now.UnixNano(), Sender: sender.User, Node: append([]byte(nil), sender.Node[:]...), N: e.N, Data: e.Data})
		r.bytes += len(e.Data)
		r.budget.Add(int64(len(e.Data)))
		acks = append(acks, Ack{Seq: r.last, Time: now})
	}
	// A batch larger than the window keeps only its newest.
	for len(r.recs) > r.window || r.bytes > r.windowBytes && len(r.recs) > 1 {
		r.dropOldest()
	}
	return acks, nil
}

func (r *ring) dropOldest() {
	n := len(r.recs[0].Data)
	r.recs[0] = storedPacket{}
	r.recs = r.recs[1:]
	r.bytes -= n
	r.budget.Add(-int64(n))
}

// read returns the packets after after, as a Log's Read does; a gap means
// the ring dropped them before this node read them.
func (r *ring) read(pipeline string, after uint64, max, maxBytes int) ReadResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := ReadResult{Last: r.last}
	if after > r.last {
		after = r.last // a read from before the hub restarted
	}
	first := r.last + 1 - uint64(len(r.recs))
	if after+1 < first {
		res.Gap = &Gap{Pipeline: pipeline, From: after + 1, To: first - 1, Reason: GapOverrun}
		after = first - 1
	}
	size := 0
	for _, p := range r.recs[after+1-first:] {
		n := len(p.Data) + len(p.Sender) + recordOverhead
		if len(res.Records) >= max || len(res.Records) > 0 && size+n > maxBytes {
			break
		}
		size += n
		rec := Record{Seq: p.Seq, Time: time.Unix(0, p.Time), Sender: Sender{User: p.Sender}, N: p.N, Data: p.Data}
		copy(rec.Sender.Node[:], p.Node)
		res.Records = append(res.Records, rec)
	}
	return res
}

// recordOverhead is about what a packet's encoding in a read reply
// takes beyond its data and sender.
const recordOverhead = 64

// lastSeq returns the Seq of the last packet put.
func (r *ring) lastSeq() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// release gives the ring's bytes back to the hub's budget.
func (r *ring) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.budget.Add(-int64(r.bytes))
	r.recs, r.bytes = nil, 0
}
