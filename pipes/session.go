package pipes

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/bokbok-go/bokbok"
)

// session is the node's work on one connection to the hub: opening the
// pipelines there, sending the outbox, and one fetcher per pipeline being
// listened to. The session's goroutines end when the connection closes or
// the node does; runSession waits for them.
type session struct {
	n      *Node
	conn   *bokbok.Conn
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // sendLoop and the fetchers

	mu       sync.Mutex // guards the maps
	opened   map[*Pipeline]openReply
	refused  map[*Pipeline]error
	fetching map[*Pipeline]bool
}

// testHookAcked, if set by a test, runs when the hub has acknowledged a
// put and before the outbox is updated.
var testHookAcked func()

// readWait is how long a node asks the hub to hold a read with nothing to
// return; below the hub's DefaultMaxWait and the keepalive interval.
const readWait = 25 * time.Second

// runSession serves one connection until it closes or the node does, and
// returns the reason.
func (n *Node) runSession(conn *bokbok.Conn) error {
	ctx, cancel := context.WithCancel(n.ctx)
	s := &session{n: n, conn: conn, ctx: ctx, cancel: cancel, opened: map[*Pipeline]openReply{}, refused: map[*Pipeline]error{}, fetching: map[*Pipeline]bool{}}
	defer func() {
		n.mu.Lock()
		n.sess = nil
		n.mu.Unlock()
		cancel()
		s.wg.Wait()
	}()
	// The session is the node's before the first reconcile, so that a
	// pipeline refused there is reported as refused, not as unconnected.
	n.mu.Lock()
	n.sess = s
	n.mu.Unlock()
	s.wg.Add(1)
	go s.sendLoop() // sends each pipeline's outbox once it is opened
	if err := s.reconcile(); err != nil {
		return err
	}
	n.log.Info("pipes: connected to the hub", "hub", n.cfg.Hub)
	if n.cfg.OnConnect != nil {
		n.cfg.OnConnect()
	}
	for {
		select {
		case <-n.kick:
			if err := s.reconcile(); err != nil {
				return err
			}
		case <-conn.Done():
			return conn.Err()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// reconcile opens on the hub the pipelines not yet opened in this session
// and starts the fetchers of those being listened to. It fails only when
// the connection does.
func (s *session) reconcile() error {
	for _, p := range s.n.pipelineList() {
		s.mu.Lock()
		_, done := s.opened[p]
		refused := s.refused[p] != nil
		s.mu.Unlock()
		if !done && !refused {
			if err := s.open(p); err != nil {
				return err
			}
		}
		s.mu.Lock()
		_, ok := s.opened[p]
		start := ok && p.listening() && !s.fetching[p]
		if start {
			s.fetching[p] = true
		}
		s.mu.Unlock()
		if start {
			s.wg.Add(1)
			go s.fetch(p)
		}
	}
	return nil
}

// open opens p on the hub. A refusal by the hub is p's, not the
// session's: it is reported and p is left alone until the next session.
func (s *session) open(p *Pipeline) error {
	var reply openReply
	err := s.conn.Invoke(s.ctx, methodOpen, openRequest{Name: p.name, Persistent: p.persistent, Create: true, Encrypted: p.encrypted, Members: p.create}, &reply)
	switch s.classify(err) {
	case outcomeOver:
		return err
	case outcomeRetry, outcomeTooLarge:
		// Try again shortly; the pipeline stays unopened meanwhile.
		time.AfterFunc(time.Second, func() { s.n.poke(s.n.kick) })
		return nil
	case outcomeRefused:
		s.refuse(p, err)
		return nil
	}
	if err := p.hubOpened(reply); err != nil {
		return err
	}
	s.mu.Lock()
	s.opened[p] = reply
	s.mu.Unlock()
	s.n.poke(s.n.outboxPut) // its outbox may be waiting
	return nil
}

func (s *session) refuse(p *Pipeline, err error) {
	err = hubError(err)
	s.mu.Lock()
	s.refused[p] = err
	delete(s.opened, p)
	s.mu.Unlock()
	s.n.log.Error("pipes: the hub refused a pipeline", "pipeline", p.name, "err", err)
	p.reportError(err)
}

// refusal returns why the hub refused p in this session, or nil.
func (s *session) refusal(p *Pipeline) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused[p]
}

func (s *session) reply(p *Pipeline) (openReply, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.opened[p]
	return r, ok
}

// sendLoop sends the outboxes of the persistent pipelines, one put at a
// time per pipeline so that the hub sees each pipeline's packets in the
// order of their numbers, and removes what the hub acknowledged.
func (s *session) sendLoop() {
	defer s.wg.Done()
	single := map[*Pipeline]bool{}           // sent one packet per put after a too-large batch
	backoff := map[*Pipeline]time.Duration{} // after the hub could not take a pipeline's packets
	retryAt := map[*Pipeline]time.Time{}
	for {
		progress := false
		var wake time.Time // the earliest retry due
		for _, p := range s.n.pipelineList() {
			if !p.persistent {
				continue
			}
			r, ok := s.reply(p)
			if !ok {
				continue
			}
			if at, ok := retryAt[p]; ok && time.Now().Before(at) {
				if wake.IsZero() || at.Before(wake) {
					wake = at
				}
				continue
			}
			sent, err := s.sendBatch(p, r, single[p])
			switch s.classify(err) {
			case outcomeOK:
				if sent {
					progress = true
					delete(backoff, p)
					delete(retryAt, p)
				}
			case outcomeOver:
				return // the next session sends
			case outcomeRetry:
				s.n.log.Warn("pipes: the hub could not take packets now; retrying", "pipeline", p.name, "err", hubError(err))
				backoff[p] = min(max(2*backoff[p], 500*time.Millisecond), 30*time.Second)
				retryAt[p] = time.Now().Add(backoff[p])
				if wake.IsZero() || retryAt[p].Before(wake) {
					wake = retryAt[p]
				}
			case outcomeTooLarge:
				single[p], progress = true, true // now find the one packet the hub refuses
			case outcomeRefused:
				s.refuse(p, err)
			}
		}
		if progress {
			continue
		}
		var retry <-chan time.Time
		if !wake.IsZero() {
			retry = time.After(time.Until(wake))
		}
		select {
		case <-s.n.outboxPut:
		case <-retry:
		case <-s.ctx.Done():
			return
		}
	}
}

// outcome is what a session does about the result of a call to the hub.
type outcome int

const (
	outcomeOK       outcome = iota
	outcomeOver             // the connection is gone or going: the session ends
	outcomeRetry            // busy, storage trouble, a limit: try again later
	outcomeTooLarge         // the hub refuses a packet's size
	outcomeRefused          // the hub refuses the pipeline, until the next connection
)

func (s *session) classify(err error) outcome {
	if err == nil {
		return outcomeOK
	}
	if s.ctx.Err() != nil || s.conn.Err() != nil {
		return outcomeOver
	}
	var re *bokbok.RemoteError
	if !errors.As(err, &re) {
		return outcomeRetry // not sent (the connection is draining), or a local failure
	}
	he := hubError(err)
	switch {
	case errors.Is(err, bokbok.ErrBusy), errors.Is(he, ErrStorage), errors.Is(he, ErrLimit):
		return outcomeRetry
	case errors.Is(he, ErrTooLarge), errors.Is(err, bokbok.ErrMessageTooLarge):
		return outcomeTooLarge
	}
	return outcomeRefused
}

// sendBatch sends the first packets of p's outbox and removes those the
// hub acknowledged. Packets larger than the hub accepts are refused here.
func (s *session) sendBatch(p *Pipeline, r openReply, single bool) (bool, error) {
	n := s.n
	max := n.cfg.MaxBatch
	if r.MaxBatch > 0 && r.MaxBatch < max {
		max = r.MaxBatch
	}
	if single {
		max = 1
	}
	batch, err := n.store.pending(p.name, p.ackedUpTo(), max, putBatchBytes)
	if err != nil || len(batch) == 0 {
		if err != nil {
			n.log.Error("pipes: reading the outbox failed", "pipeline", p.name, "err", err)
		}
		return false, nil
	}
	keep := batch[:0]
	for _, pk := range batch {
		if r.MaxPacket > 0 && len(pk.Data) > r.MaxPacket {
			n.refusePacket(p, pk, &HubError{Code: CodeTooLarge, Message: "packet larger than the hub accepts"})
			continue
		}
		keep = append(keep, pk)
	}
	if len(keep) == 0 {
		return true, nil
	}
	var reply putReply
	id := n.store.id
	if err := s.conn.Invoke(s.ctx, methodPut, putRequest{Pipeline: p.name, Node: id[:], Packets: keep}, &reply); err != nil {
		if len(keep) == 1 && s.classify(err) == outcomeTooLarge {
			n.refusePacket(p, keep[0], hubError(err))
			return true, nil
		}
		return false, err
	}
	if len(reply.Acks) != len(keep) {
		return false, &bokbok.RemoteError{Code: CodeBadRequest, Message: "the hub acknowledged a different number of packets"}
	}
	if testHookAcked != nil {
		testHookAcked()
	}
	ns := make([]uint64, len(keep))
	for i, pk := range keep {
		ns[i] = pk.N
	}
	// The next batch may go while this removal commits: until it has, the
	// sender skips what the hub acknowledged.
	p.setAcked(ns[len(ns)-1])
	n.store.removeAsync(p.name, ns, func(err error) {
		if err != nil {
			// They were appended; a resend is dropped by the hub as a duplicate.
			n.log.Error("pipes: removing acknowledged packets failed", "pipeline", p.name, "err", err)
		}
	})
	return true, nil
}

func (n *Node) refusePacket(p *Pipeline, pk wirePacket, err error) {
	rp := RefusedPacket{Pipeline: p.name, ID: PacketID{Node: n.store.id, N: pk.N}, Data: pk.Data, Err: err}
	if n.cfg.OnRefused != nil {
		n.cfg.OnRefused(rp)
	} else {
		n.log.Error("pipes: the hub refused a packet; dropped", "pipeline", p.name, "id", rp.ID.String(), "size", len(pk.Data), "err", err)
	}
	if rerr := n.store.remove(p.name, []uint64{pk.N}); rerr != nil {
		n.log.Error("pipes: removing a refused packet failed", "pipeline", p.name, "err", rerr)
	}
}

// fetch reads p's packets from the hub and queues them for p's
// deliverer; while the deliverer is busy it does not read, so a slow
// listener holds the hub back rather than the node buffering.
func (s *session) fetch(p *Pipeline) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.fetching, p)
		s.mu.Unlock()
	}()
	max := s.n.cfg.MaxBatch
	for s.ctx.Err() == nil {
		gen, after := p.fetchPosition()
		var reply readReply
		err := s.conn.Invoke(s.ctx, methodRead, readRequest{Pipeline: p.name, After: after, Max: max, WaitMillis: readWait.Milliseconds()}, &reply)
		switch s.classify(err) {
		case outcomeOver:
			return
		case outcomeTooLarge:
			if max == 1 { // a packet larger than this node accepts
				s.refuse(p, err)
				return
			}
			max = (max + 1) / 2 // a reply larger than this node accepts
			continue
		case outcomeRetry:
			select {
			case <-time.After(time.Second):
			case <-s.ctx.Done():
			}
			continue
		case outcomeRefused:
			s.refuse(p, err)
			return
		}
		b := batch{gen: gen, packets: reply.Packets}
		if reply.Gap != nil {
			reason := GapRetention
			if !p.persistent {
				reason = GapOverrun
			}
			b.gap = &Gap{Pipeline: p.name, From: reply.Gap.From, To: reply.Gap.To, Reason: reason}
		}
		if len(b.packets) == 0 && b.gap == nil {
			continue
		}
		if !p.queue(s.ctx, b) {
			return
		}
	}
}
