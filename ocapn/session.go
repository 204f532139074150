package ocapn

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"reflect"
	"runtime"
	"sync"
	"time"
	"weak"

	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// CapTPVersion is the version of the CapTP draft sessions speak.
const CapTPVersion = "1.0"

// session is one CapTP session: the connection, this side's key, the
// peer's, and the tables of exports, imports and answers. Everything but
// the reader's and writer's goroutines runs on the node's loop.
type session struct {
	n      *Node
	nl     Netlayer
	dialed *Peer // the peer this node dialed (outbound), or nil (inbound)
	key    sessionKey
	hello  []byte // an inbound session's op:start-session, sent once the peer's is verified

	out     chan outMsg   // to the writer; closed never (stop ends it)
	stop    chan struct{} // closed by end: the writer and reader give up
	pending chan struct{} // a slot per peer message posted and not yet handled
	conn    net.Conn      // set once connected; read by end on the loop
	connMu  sync.Mutex    // guards conn (set by the connecting goroutine)

	// owned by the loop
	peer       Peer // once the peer's op:start-session is verified
	peerPub    ed25519.PublicKey
	ready      bool
	ended      bool
	endErr     error
	waiters    []func(*session, error)
	exports    map[int]*export
	exportOf   map[any]int // comparable exported values -> position
	nextExport int
	imports    map[int]*importEntry
	answers    map[int]*Promise
	nextAnswer int                    // the answer position of our next op:deliver
	resolvers  map[*Resolver]struct{} // our questions' resolvers, broken if the session ends
	started    bool                   // the peer's op:start-session was handled
	held       []syrup.Record         // messages after the peer's hello, before the session is established
	successors []func()               // run once s ends: sessions waiting for it to (establish)
	id         []byte                 // the session ID, once ready

	// third-party handoffs (handoff.go)
	gifts       map[string]any           // as gifter-exporter session: deposited gifts by id
	awaiting    map[string]*withdrawal   // as gifter-exporter session: withdrawals waiting for a gift, by id
	withdrawals map[*withdrawal]struct{} // as exporter-receiver session: the peer's withdrawals waiting
	counts      handoffCounts            // as exporter-receiver session: handoff counts the peer used
	nextHandoff int64                    // as receiver: the next handoff count this side uses
	handoffs    int                      // as gifter-receiver session: handoffs the peer gave, in progress
	waiting     int                      // the peer's messages to promises of ours not yet settled
}

// export is one entry of the session's export table.
type export struct {
	v     any // Object or *Promise
	count int // times sent, not yet collected by op:gc-export
}

// outMsg is one encoded message for the writer; final ends the session
// once written.
type outMsg struct {
	b     []byte
	final bool
}

func (n *Node) newSession(nl Netlayer, dialed *Peer) (*session, error) {
	key, err := newSessionKey()
	if err != nil {
		return nil, err
	}
	s := &session{
		key:       key,
		n:         n,
		nl:        nl,
		dialed:    dialed,
		out:       make(chan outMsg, n.cfg.MaxQueued),
		stop:      make(chan struct{}),
		pending:   make(chan struct{}, n.cfg.MaxPending),
		exports:   make(map[int]*export),
		exportOf:  make(map[any]int),
		imports:   make(map[int]*importEntry),
		answers:   make(map[int]*Promise),
		resolvers: make(map[*Resolver]struct{}),
	}
	s.exports[0] = &export{v: bootstrapObject{s: s}, count: 1}
	s.nextExport = 1
	return s, nil
}

// startSession runs session s (nil: a new inbound one) on connection c:
// it sends this side's op:start-session and starts the reader and writer.
// Called off the loop.
func (n *Node) startSession(c net.Conn, nl Netlayer, s *session) {
	if n.live.Add(1) > int64(n.cfg.MaxSessions) {
		n.live.Add(-1)
		c.Close()
		if s != nil {
			n.post(func() { s.end(fmt.Errorf("ocapn: %d sessions are open, the limit", n.cfg.MaxSessions), false) })
		} else {
			n.logf("ocapn: a connection refused", "err", "MaxSessions reached")
		}
		return
	}
	var err error
	if s == nil {
		if s, err = n.newSession(nl, nil); err != nil {
			n.live.Add(-1)
			c.Close()
			n.logf("ocapn: session not started", "err", err)
			return
		}
	}
	start, err := startSessionMessage(s.key, nl.Location())
	if err != nil {
		n.live.Add(-1)
		c.Close()
		n.post(func() { s.end(err, false) })
		return
	}
	s.connMu.Lock()
	s.conn = c
	s.connMu.Unlock()
	n.post(func() { n.all[s] = struct{}{} })
	if s.dialed != nil {
		s.out <- outMsg{b: start} // the channel is new and has room
	} else {
		// An accepted session says hello once the peer has: a connection
		// that does not open with a valid op:start-session (or aborts
		// first) is closed without one.
		s.hello = start
	}
	n.wg.Add(2)
	go s.writeLoop(c)
	go s.readLoop(c)
}

// writeLoop writes queued messages until the session stops.
func (s *session) writeLoop(c net.Conn) {
	defer s.n.wg.Done()
	for {
		select {
		case m := <-s.out:
			c.SetWriteDeadline(time.Now().Add(s.n.cfg.HandshakeTimeout * 3))
			if _, err := c.Write(m.b); err != nil || m.final {
				c.Close()
				if err != nil {
					s.n.post(func() { s.end(fmt.Errorf("ocapn: writing: %w", err), false) })
				}
				return
			}
		case <-s.stop:
			c.Close()
			return
		}
	}
}

// readLoop decodes the peer's messages and hands them to the loop, one
// slot of MaxPending each.
func (s *session) readLoop(c net.Conn) {
	defer s.n.wg.Done()
	defer s.n.live.Add(-1) // the session's connection is done with
	d := syrup.NewDecoder(c, s.n.cfg.Syrup)
	c.SetReadDeadline(time.Now().Add(s.n.cfg.HandshakeTimeout))
	first := true
	for {
		v, err := d.Decode()
		if err != nil {
			s.n.post(func() { s.end(fmt.Errorf("ocapn: reading: %w", err), !isClosed(err)) })
			return
		}
		if first {
			c.SetReadDeadline(time.Time{})
			first = false
		}
		select {
		case s.pending <- struct{}{}:
		case <-s.stop:
			return
		}
		s.n.post(func() {
			<-s.pending
			if !s.ended {
				s.receive(v)
			}
		})
	}
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed)
}

// whenReady runs f once the session is established (or with the error
// that ended it). On the loop.
func (s *session) whenReady(f func(*session, error)) {
	switch {
	case s.ended:
		f(nil, s.endErr)
	case s.ready:
		f(s, nil)
	default:
		s.waiters = append(s.waiters, f)
	}
}

// send encodes msg and queues it; a peer that lets MaxQueued messages
// pile up has its session aborted. On the loop.
func (s *session) send(msg any) {
	if s.ended {
		return
	}
	b, err := syrup.Marshal(msg)
	if err != nil {
		s.abort("ocapn: encoding a message: " + err.Error())
		return
	}
	select {
	case s.out <- outMsg{b: b}:
	default:
		s.end(errors.New("ocapn: the peer does not read its messages"), false)
	}
}

// abort sends op:abort with reason and ends the session. On the loop.
func (s *session) abort(reason string) {
	if s.ended {
		return
	}
	b, _ := syrup.Marshal(syrup.Record{Label: sym("op:abort"), Fields: []any{reason}})
	select {
	case s.out <- outMsg{b: b, final: true}:
		s.finish(errors.New(reason), false)
	default:
		s.end(errors.New(reason), false)
	}
}

// end ends the session at once (the writer stops; nothing more is sent).
// report: log why. On the loop.
func (s *session) end(err error, report bool) {
	if s.ended {
		return
	}
	s.finish(err, report)
	close(s.stop)
}

// finish drops the session's state: its waiters and questions get err.
// The writer stops after a final message, or at stop. On the loop.
func (s *session) finish(err error, report bool) {
	s.ended, s.endErr = true, err
	if report {
		s.n.logf("ocapn: session ended", "peer", s.peer.String(), "err", err)
	}
	var keys []string
	if s.dialed != nil {
		keys = append(keys, peerKey(*s.dialed))
	}
	if s.ready {
		keys = append(keys, peerKey(s.peer))
	}
	for _, k := range keys {
		if s.n.sessions[k] == s {
			delete(s.n.sessions, k)
		}
	}
	delete(s.n.all, s)
	for _, f := range s.successors {
		s.n.post(f)
	}
	s.successors = nil
	if s.id != nil && s.n.byID[string(s.id)] == s {
		delete(s.n.byID, string(s.id))
	}
	s.endHandoffs(err)
	waiters := s.waiters
	s.waiters = nil
	for _, f := range waiters {
		f(nil, fmt.Errorf("%w: %v", ErrSessionEnded, err))
	}
	for r := range s.resolvers {
		r.Break(fmt.Errorf("%w: %v", ErrSessionEnded, err))
	}
	s.exports, s.exportOf, s.imports, s.answers, s.resolvers = nil, nil, nil, nil, nil
	s.connMu.Lock()
	c := s.conn
	s.connMu.Unlock()
	if c != nil {
		// Let a final message out, then close (the writer does, or this
		// timer if the writer is stuck).
		time.AfterFunc(time.Second, func() { c.Close() })
	}
}

// receive handles one message from the peer. On the loop.
func (s *session) receive(v any) {
	r, ok := v.(syrup.Record)
	if !ok {
		s.abort("a message that is not a record")
		return
	}
	label, _ := r.Label.(syrup.Symbol)
	if s.started && !s.ready && label != "op:abort" {
		if len(s.held) >= s.n.cfg.MaxPending {
			s.abort("too many messages before the session is established")
			return
		}
		s.held = append(s.held, r)
		return
	}
	if !s.started {
		if label == "op:abort" {
			s.end(errors.New("ocapn: the peer aborted before the session started"), false)
			return
		}
		if label != "op:start-session" {
			s.abort("the first message must be op:start-session")
			return
		}
		s.startSession(r)
		return
	}
	s.handle(r)
}

// handle handles one message of an established session. On the loop.
func (s *session) handle(r syrup.Record) {
	label, _ := r.Label.(syrup.Symbol)
	var err error
	switch label {
	case "op:start-session":
		err = errors.New("a second op:start-session")
	case "op:abort":
		reason := "(no reason)"
		if len(r.Fields) == 1 {
			if t, ok := textOf(r.Fields[0]); ok {
				reason = t
			}
		}
		s.end(fmt.Errorf("ocapn: the peer aborted: %s", reason), false)
		return
	case "op:deliver-only":
		err = s.onDeliver(r, false)
	case "op:deliver":
		err = s.onDeliver(r, true)
	case "op:listen":
		err = s.onListen(r)
	case "op:gc-export":
		err = s.onGCExport(r)
	case "op:gc-answer":
		err = s.onGCAnswer(r)
	default:
		err = fmt.Errorf("unknown operation %q", fmt.Sprint(r.Label))
	}
	if err != nil {
		s.abort(err.Error())
	}
}

// startSession verifies the peer's op:start-session and establishes the
// session, resolving crossed hellos. On the loop.
func (s *session) startSession(r syrup.Record) {
	s.started = true
	st, err := parseStartSession(r)
	if err != nil {
		s.abort(err.Error())
		return
	}
	if s.dialed != nil && !st.location.Same(*s.dialed) {
		s.abort(fmt.Sprintf("dialed %s, answered by %s", *s.dialed, st.location))
		return
	}
	if s.dialed == nil {
		s.connMu.Lock()
		authed, ok := s.conn.(interface{ PeerDesignator() string })
		s.connMu.Unlock()
		if ok && (st.location.Transport != s.nl.Transport() || st.location.Designator != authed.PeerDesignator()) {
			s.abort(fmt.Sprintf("the netlayer authenticated %q, which claims to be %s", authed.PeerDesignator(), st.location))
			return
		}
	}
	s.peer, s.peerPub = st.location, st.pub
	s.establish(st, false)
}

// replacedGrace is how long a peer's new inbound session waits for an
// established one with the same peer to end before it is refused: a peer
// that closed its connection and dialed again at once is seen by the
// node in either order.
const replacedGrace = 500 * time.Millisecond

// establish makes s the session with its peer unless one is open
// already, resolving crossed hellos. retried: s waited for the previous
// session to end. On the loop.
func (s *session) establish(st startSession, retried bool) {
	if s.ended {
		return
	}
	key := peerKey(st.location)
	if other := s.n.sessions[key]; other != nil && other != s {
		if other.ready && s.dialed == nil && !retried {
			// Wait a moment for the old session to end; messages the
			// peer sends meanwhile are held (receive).
			other.successors = append(other.successors, func() { s.establish(st, true) })
			time.AfterFunc(replacedGrace, func() { s.n.post(func() { s.establish(st, true) }) })
			return
		}
		if other.ready || s.dialed != nil {
			s.abort("a session with this peer is already open")
			return
		}
		// Crossed hellos: we dialed the peer while it dialed us. The side
		// whose identifier is lower loses: our outbound session's key
		// against the peer's on this inbound one.
		if string(publicID(other.key.pub)) < string(publicID(st.pub)) {
			waiters := other.waiters
			other.waiters = nil
			other.abort("crossed hellos: this session loses")
			s.waiters = append(s.waiters, waiters...)
		} else {
			s.abort("crossed hellos: this session loses")
			return
		}
	}
	if s.ready {
		return // the grace timer, after the old session ended
	}
	s.n.sessions[key] = s
	s.ready = true
	s.id = sessionID(publicID(s.key.pub), publicID(st.pub))
	s.n.byID[string(s.id)] = s
	if s.hello != nil {
		s.out <- outMsg{b: s.hello} // the first message queued: there is room
		s.hello = nil
	}
	waiters := s.waiters
	s.waiters = nil
	for _, f := range waiters {
		f(s, nil)
	}
	held := s.held
	s.held = nil
	for _, r := range held {
		if !s.ended {
			s.handle(r)
		}
	}
}

// exportValue returns the position of v (an Object or *Promise) in the
// export table, exporting it if needed, and counts one more sending.
func (s *session) exportValue(v any) (int, error) {
	comparable := reflect.TypeOf(v).Comparable()
	if comparable {
		if pos, ok := s.exportOf[v]; ok {
			s.exports[pos].count++
			return pos, nil
		}
	}
	if len(s.exports) >= s.n.cfg.MaxExports {
		return 0, fmt.Errorf("ocapn: this session exports %d objects, its limit", len(s.exports))
	}
	pos := s.nextExport
	s.nextExport++
	s.exports[pos] = &export{v: v, count: 1}
	if comparable {
		s.exportOf[v] = pos
	}
	return pos, nil
}

// importEntry is one of the peer's exports this session holds. The Ref
// is held weakly: once the program drops it, Go's collector frees it, and
// the session tells the peer (op:gc-export) how many of its descriptors
// it has dropped.
type importEntry struct {
	ref   weak.Pointer[Ref]
	count int // descriptors received for it, not yet given back
}

// importRef returns the Ref for the peer's export at pos, counting one
// more descriptor received for it.
func (s *session) importRef(pos int, promise bool) (*Ref, error) {
	if e := s.imports[pos]; e != nil {
		if r := e.ref.Value(); r != nil {
			e.count++
			return r, nil
		}
		// Collected; its cleanup, still to run, gives back e.count.
	}
	if len(s.imports) >= s.n.cfg.MaxImports {
		return nil, fmt.Errorf("the peer exported more than %d objects", s.n.cfg.MaxImports)
	}
	r := &Ref{s: s, pos: pos, promise: promise}
	e := &importEntry{ref: weak.Make(r), count: 1}
	s.imports[pos] = e
	runtime.AddCleanup(r, func(e *importEntry) {
		s.n.post(func() { s.dropImport(pos, e) })
	}, e)
	return r, nil
}

// dropImport tells the peer that the Ref for its export pos is gone. On
// the loop.
func (s *session) dropImport(pos int, e *importEntry) {
	if s.ended {
		return
	}
	if s.imports[pos] == e {
		delete(s.imports, pos)
	}
	if pos != 0 && e.count > 0 {
		s.send(syrup.Record{Label: sym("op:gc-export"), Fields: []any{[]any{int64(pos)}, []any{int64(e.count)}}})
	}
}

// bootstrapRef is a Ref to the peer's bootstrap object, which is never
// given back.
func (s *session) bootstrapRef() *Ref {
	if e := s.imports[0]; e != nil {
		if r := e.ref.Value(); r != nil {
			return r
		}
	}
	r := &Ref{s: s, pos: 0}
	s.imports[0] = &importEntry{ref: weak.Make(r)}
	return r
}
