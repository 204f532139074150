package pipes

import (
	"context"
	"fmt"
	"time"

	"github.com/bokbok-go/bokbok"
)

// HistoryQuery selects packets of a persistent pipeline's log by Seq and
// by the hub's time, a page at a time. Zero fields leave their side of
// the range open.
type HistoryQuery struct {
	From, To     uint64    // Seq range, both included
	Since, Until time.Time // hub time range, both included
	Max          int       // packets per page; 0 (or more than the hub's MaxBatch) means MaxBatch
	Newest       bool      // the page holds the newest packets of the range, not the oldest
}

// HistoryPage is one page of a history query.
type HistoryPage struct {
	Packets []Packet // in increasing Seq, whichever end of the range the page is from

	// Next is the query for the next page (older ones for a Newest
	// query), or nil when the range holds no more. A page may be short,
	// or even empty, with a Next: the hub bounds the records one query
	// may look at.
	Next *HistoryQuery

	Last uint64 // the pipeline's last Seq when the hub read it
}

// History returns a page of the pipeline's log, read from the hub: the
// packets still held (see Retention) that the query selects. The node
// must be connected (bokbok.ErrNotConnected otherwise), and the pipeline
// persistent (ErrKindMismatch otherwise). On an encrypted pipeline, the
// page holds the packets that the keys this node holds open, opened.
func (p *Pipeline) History(ctx context.Context, q HistoryQuery) (HistoryPage, error) {
	if !p.persistent {
		return HistoryPage{}, fmt.Errorf("%w: %q is transient: it has no history", ErrKindMismatch, p.name)
	}
	s, err := p.openedSession()
	if err != nil {
		return HistoryPage{}, err
	}
	req := historyRequest{Pipeline: p.name, From: q.From, To: q.To, Max: q.Max, Newest: q.Newest}
	if !q.Since.IsZero() {
		req.Since = q.Since.UnixNano()
	}
	if !q.Until.IsZero() {
		req.Until = q.Until.UnixNano()
	}
	var reply historyReply
	if err := s.conn.Invoke(ctx, methodHistory, req, &reply); err != nil {
		return HistoryPage{}, hubError(err)
	}
	page := HistoryPage{Last: reply.Last, Packets: make([]Packet, 0, len(reply.Packets))}
	for _, sp := range reply.Packets {
		if p.encrypted {
			// Only sealed packets, opened with the keys this node holds.
			var err error
			if len(sp.Data) == 0 || sp.Data[0] != packetSealed {
				continue
			}
			if sp.Data, err = p.unseal(sp.Data); err != nil {
				continue
			}
		}
		page.Packets = append(page.Packets, p.packet(sp))
	}
	if reply.Next != 0 {
		next := q
		if q.Newest {
			next.To = reply.Next
		} else {
			next.From = reply.Next
		}
		page.Next = &next
	}
	return page, nil
}

// openedSession returns the current session once it has opened p.
func (p *Pipeline) openedSession() (*session, error) {
	p.n.mu.Lock()
	s := p.n.sess
	p.n.mu.Unlock()
	if s == nil {
		return nil, fmt.Errorf("pipes: %q: %w", p.name, bokbok.ErrNotConnected)
	}
	if _, ok := s.reply(p); !ok {
		if err := s.refusal(p); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("pipes: %q: not opened on the hub yet: %w", p.name, bokbok.ErrNotConnected)
	}
	return s, nil
}

// historyScan bounds the records one history request may look at.
const historyScan = 16 * DefaultMaxBatch

// serveHistory answers pipes.history for an authenticated user.
func (h *Hub) serveHistory(ctx context.Context, user string, req historyRequest) (historyReply, error) {
	p, err := h.pipeline(ctx, user, req.Pipeline, AccessRead)
	if err != nil {
		return historyReply{}, remoteErr(err)
	}
	if !p.info.Persistent {
		return historyReply{}, remoteErr(fmt.Errorf("%w: %q is transient: it has no history", ErrKindMismatch, req.Pipeline))
	}
	max := req.Max
	if max <= 0 || max > h.cfg.MaxBatch {
		max = h.cfg.MaxBatch
	}
	var reply historyReply
	if hl, ok := h.log.(historyLog); ok {
		reply, err = hl.history(req, max, h.cfg.MaxReadBytes, historyScan)
	} else {
		reply, err = logHistory(ctx, h.log, req, max, h.cfg.MaxReadBytes, historyScan)
	}
	if err != nil {
		return historyReply{}, remoteErr(err)
	}
	return reply, nil
}

// historyLog is a Log that can answer history requests.
type historyLog interface {
	history(req historyRequest, max, maxBytes, maxScan int) (historyReply, error)
}

// listReply names the pipelines a user may use.
func (h *Hub) serveList(ctx context.Context, user string) (listReply, error) {
	if h.shared { // pipelines other hubs created
		infos, err := h.log.Pipelines(ctx)
		if err != nil {
			return listReply{}, remoteErr(err)
		}
		for _, in := range infos {
			if _, err := h.lookup(ctx, in.Name); err != nil {
				return listReply{}, remoteErr(err)
			}
		}
	}
	h.mu.Lock()
	ps := make([]*hubPipeline, 0, len(h.pipelines))
	for _, p := range h.pipelines {
		ps = append(ps, p)
	}
	h.mu.Unlock()
	var reply listReply
	for _, p := range ps {
		if h.allowed(user, p, AccessRead) != nil && h.allowed(user, p, AccessWrite) != nil {
			continue
		}
		lp := listedPipeline{Name: p.info.Name, Persistent: p.info.Persistent, Encrypted: p.info.Encrypted, Members: p.memberList()}
		if p.ring != nil {
			lp.Last = p.ring.lastSeq()
		} else if in, err := h.log.Info(ctx, p.info.Name); err == nil {
			lp.Last = in.Last
		}
		reply.Pipelines = append(reply.Pipelines, lp)
	}
	sortListed(reply.Pipelines)
	return reply, nil
}

// ListedPipeline is a pipeline as Node.Pipelines lists it.
type ListedPipeline struct {
	Name       string
	Persistent bool
	Encrypted  bool     // sealed by its members; the hub holds ciphertext only
	Members    []string // a private pipeline's members; none for an open one
	Last       uint64   // the last Seq given in it
}

// Pipelines lists the pipelines of the hub this node's user may read or
// write, by name. The node must be connected.
func (n *Node) Pipelines(ctx context.Context) ([]ListedPipeline, error) {
	n.mu.Lock()
	s := n.sess
	n.mu.Unlock()
	if s == nil {
		return nil, fmt.Errorf("pipes: %w", bokbok.ErrNotConnected)
	}
	var reply listReply
	if err := s.conn.Invoke(ctx, methodList, struct{}{}, &reply); err != nil {
		return nil, hubError(err)
	}
	out := make([]ListedPipeline, len(reply.Pipelines))
	for i, lp := range reply.Pipelines {
		out[i] = ListedPipeline{Name: lp.Name, Persistent: lp.Persistent, Encrypted: lp.Encrypted, Members: lp.Members, Last: lp.Last}
	}
	return out, nil
}
