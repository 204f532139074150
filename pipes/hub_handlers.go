package pipes

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/bokbok-go/bokbok"
)

// mux routes the hub's methods.
func (h *Hub) mux() *bokbok.Mux {
	m := bokbok.NewMux()
	handle(m, methodOpen, h.handleOpen)
	handle(m, methodPut, h.handlePut)
	handle(m, methodRead, h.handleRead)
	handle(m, methodHistory, func(ctx context.Context, req historyRequest) (historyReply, error) {
		_, user := caller(ctx)
		return h.serveHistory(ctx, user, req)
	})
	handle(m, methodList, func(ctx context.Context, _ struct{}) (listReply, error) {
		_, user := caller(ctx)
		return h.serveList(ctx, user)
	})
	handle(m, methodMembers, func(ctx context.Context, req membersRequest) (openReply, error) {
		_, user := caller(ctx)
		return h.serveMembers(ctx, user, req)
	})
	handle(m, methodSearch, func(ctx context.Context, req searchRequest) (searchReply, error) {
		_, user := caller(ctx)
		return h.serveSearch(ctx, user, req)
	})
	return m
}

// handle registers f for method, decoding requests leniently: keys a
// request has and Req does not are ignored (PROTOCOL.md §21.3), so that
// newer nodes may add fields.
func handle[Req, Reply any](m *bokbok.Mux, method string, f func(context.Context, Req) (Reply, error)) {
	m.HandleFunc(method, func(ctx context.Context, r *bokbok.Request) (any, error) {
		var req Req
		if err := r.Decode(&req); err != nil {
			return nil, bokbok.Errorf(bokbok.CodeBadRequest, "%s: request: %v", method, err)
		}
		return f(ctx, req)
	})
}

// caller returns the connection and authenticated user of a request.
func caller(ctx context.Context) (*bokbok.Conn, string) {
	c := bokbok.RequestFromContext(ctx).Conn()
	return c, c.User()
}

// checkName refuses names a hub does not hold: empty, longer than
// MaxNameLen, not UTF-8, or with control characters.
func checkName(name string) error {
	if name == "" || len(name) > MaxNameLen || !utf8.ValidString(name) {
		return fmt.Errorf("%w: %q: 1 to %d bytes of UTF-8", ErrBadName, name, MaxNameLen)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: %q has control characters", ErrBadName, name)
		}
	}
	return nil
}

func (h *Hub) handleOpen(ctx context.Context, req openRequest) (openReply, error) {
	_, user := caller(ctx)
	return h.serveOpen(ctx, user, req)
}

func (h *Hub) handlePut(ctx context.Context, req putRequest) (putReply, error) {
	_, user := caller(ctx)
	return h.servePut(ctx, user, req)
}

func (h *Hub) handleRead(ctx context.Context, req readRequest) (any, error) {
	c, user := caller(ctx)
	return h.serveRead(ctx, c, c.Draining(), user, req)
}

// serveOpen answers pipes.open for an authenticated user.
func (h *Hub) serveOpen(ctx context.Context, user string, req openRequest) (openReply, error) {
	p, err := h.open(ctx, user, req)
	if err != nil {
		return openReply{}, remoteErr(err)
	}
	return h.openReplyOf(ctx, p)
}

// openReplyOf describes p as it is now.
func (h *Hub) openReplyOf(ctx context.Context, p *hubPipeline) (openReply, error) {
	in := p.info
	if p.ring != nil {
		in.Last = p.ring.lastSeq()
		in.First = in.Last + 1
	} else {
		var err error
		if in, err = h.log.Info(ctx, in.Name); err != nil {
			return openReply{}, remoteErr(err)
		}
	}
	return openReply{Name: in.Name, Persistent: in.Persistent, Epoch: in.Epoch[:], First: in.First, Last: in.Last, MaxPacket: h.cfg.MaxPacketSize, MaxBatch: h.cfg.MaxBatch,
		Encrypted: in.Encrypted, Owner: in.Owner, Members: p.memberList()}, nil
}

func (h *Hub) open(ctx context.Context, user string, req openRequest) (*hubPipeline, error) {
	if err := checkName(req.Name); err != nil {
		return nil, err
	}
	if err := h.authorize(user, req.Name, AccessRead); err != nil {
		if err2 := h.authorize(user, req.Name, AccessWrite); err2 != nil {
			return nil, err
		}
	}
	p, err := h.lookup(ctx, req.Name)
	if err != nil && !errors.Is(err, ErrUnknownPipeline) {
		return nil, err
	}
	if p == nil {
		if !req.Create {
			return nil, fmt.Errorf("%w: %q", ErrUnknownPipeline, req.Name)
		}
		if err := h.authorize(user, req.Name, AccessCreate); err != nil {
			return nil, err
		}
		ms, err := members(user, req.Members)
		if err != nil {
			return nil, err
		}
		if req.Encrypted && (!req.Persistent || len(ms) == 0) {
			return nil, fmt.Errorf("%w: an encrypted pipeline is persistent and private", ErrBadRequest)
		}
		// Reserve the pipeline's place before creating it, so that
		// concurrent creations cannot pass MaxPipelines together.
		h.mu.Lock()
		if len(h.pipelines)+h.creating >= h.cfg.MaxPipelines {
			h.mu.Unlock()
			return nil, fmt.Errorf("%w: the hub holds %d pipelines", ErrLimit, h.cfg.MaxPipelines)
		}
		h.creating++
		h.mu.Unlock()
		in, err := h.log.Create(ctx, PipelineSpec{Name: req.Name, Persistent: req.Persistent, Encrypted: req.Encrypted, Owner: user, Members: ms})
		h.mu.Lock()
		h.creating--
		h.mu.Unlock()
		if err != nil {
			return nil, err
		}
		h.mu.Lock()
		if p = h.pipelines[req.Name]; p == nil {
			p = h.newPipeline(in)
			h.pipelines[req.Name] = p
			h.cfg.Logger.Info("pipes: pipeline created", "pipeline", req.Name, "persistent", in.Persistent, "user", user)
		}
		h.mu.Unlock()
	}
	if err := h.allowed(user, p, AccessRead); err != nil {
		if err2 := h.allowed(user, p, AccessWrite); err2 != nil {
			return nil, err
		}
	}
	if p.info.Persistent != req.Persistent || p.info.Encrypted != req.Encrypted {
		return nil, fmt.Errorf("%w: %q is %s", ErrKindMismatch, req.Name, kindOf(p.info))
	}
	return p, nil
}

func kindOf(in PipelineInfo) string {
	if in.Encrypted {
		return "encrypted"
	}
	return kindName(in.Persistent)
}

func kindName(persistent bool) string {
	if persistent {
		return "persistent"
	}
	return "transient"
}

// pipeline returns an existing pipeline the user may access.
func (h *Hub) pipeline(ctx context.Context, user, name string, a Access) (*hubPipeline, error) {
	p, err := h.lookup(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := h.allowed(user, p, a); err != nil {
		return nil, err
	}
	return p, nil
}

// servePut answers pipes.put for an authenticated user.
func (h *Hub) servePut(ctx context.Context, user string, req putRequest) (putReply, error) {
	p, err := h.pipeline(ctx, user, req.Pipeline, AccessWrite)
	if err != nil {
		return putReply{}, remoteErr(err)
	}
	if len(req.Node) != len(NodeID{}) {
		return putReply{}, bokbok.Errorf(CodeBadRequest, "bad request: node must be %d bytes", len(NodeID{}))
	}
	if len(req.Packets) == 0 || len(req.Packets) > h.cfg.MaxBatch {
		return putReply{}, bokbok.Errorf(CodeBadRequest, "bad request: a put carries 1 to %d packets", h.cfg.MaxBatch)
	}
	entries := make([]Entry, len(req.Packets))
	for i, pk := range req.Packets {
		if len(pk.Data) > h.cfg.MaxPacketSize {
			return putReply{}, bokbok.Errorf(CodeTooLarge, "packet of %d bytes; the hub accepts %d", len(pk.Data), h.cfg.MaxPacketSize)
		}
		if i > 0 && pk.N <= req.Packets[i-1].N {
			return putReply{}, bokbok.Errorf(CodeBadRequest, "bad request: packet numbers must increase")
		}
		entries[i] = Entry{N: pk.N, Data: pk.Data}
	}
	from := Sender{User: user}
	copy(from.Node[:], req.Node)
	var acks []Ack
	if p.ring != nil {
		acks, err = p.ring.put(from, entries)
	} else {
		acks, err = h.log.Append(ctx, req.Pipeline, from, entries)
	}
	if err != nil {
		h.cfg.Logger.Warn("pipes: put failed", "pipeline", req.Pipeline, "user", user, "err", err)
		return putReply{}, remoteErr(err)
	}
	p.wake()
	if h.index != nil && p.ring == nil && !h.shared {
		h.index.changed(req.Pipeline) // a shared log's Watch tells it
	}
	reply := putReply{Acks: make([]wireAck, len(acks))}
	for i, a := range acks {
		reply.Acks[i] = wireAck{Seq: a.Seq, Dup: a.Dup}
		if !a.Time.IsZero() {
			reply.Acks[i].Time = a.Time.UnixNano()
		}
	}
	return reply, nil
}

// serveRead answers pipes.read for an authenticated user on connection
// c (the key of the per-connection count of reads); a read waiting for
// packets returns empty when drain closes (the connection is shutting
// down) or the hub begins to.
func (h *Hub) serveRead(ctx context.Context, c any, drain <-chan struct{}, user string, req readRequest) (any, error) {
	p, err := h.pipeline(ctx, user, req.Pipeline, AccessRead)
	if err != nil {
		return nil, remoteErr(err)
	}
	h.mu.Lock()
	if h.reads[c] >= h.cfg.MaxReadsPerConn {
		h.mu.Unlock()
		return nil, bokbok.Errorf(CodeLimit, "%d reads in progress on this connection", h.cfg.MaxReadsPerConn)
	}
	h.reads[c]++
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		if h.reads[c]--; h.reads[c] <= 0 {
			delete(h.reads, c)
		}
		h.mu.Unlock()
	}()

	max := req.Max
	if max <= 0 || max > h.cfg.MaxBatch {
		max = h.cfg.MaxBatch
	}
	wait := min(time.Duration(max64(req.WaitMillis, 0))*time.Millisecond, h.cfg.MaxWait)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	raw, _ := h.log.(*boltLog)
	for {
		changed := p.changed()
		if err := h.allowed(user, p, AccessRead); err != nil {
			return nil, remoteErr(err) // the members changed while it waited
		}
		if raw != nil && p.ring == nil {
			recs, gap, last, err := raw.readRaw(req.Pipeline, req.After, max, h.cfg.MaxReadBytes)
			if err != nil {
				return nil, remoteErr(err)
			}
			if len(recs) > 0 || gap != nil || wait <= 0 || isClosed(h.ending) {
				r := rawReadReply{Packets: recs, Last: last}
				if gap != nil {
					r.Gap = &wireGap{From: gap.From, To: gap.To}
				}
				return r, nil
			}
		} else {
			var res ReadResult
			if p.ring != nil {
				res = p.ring.read(req.Pipeline, req.After, max, h.cfg.MaxReadBytes)
			} else if res, err = h.log.Read(ctx, req.Pipeline, req.After, max, h.cfg.MaxReadBytes); err != nil {
				return nil, remoteErr(err)
			}
			if len(res.Records) > 0 || res.Gap != nil || wait <= 0 || isClosed(h.ending) {
				return readReplyOf(res), nil
			}
		}
		select {
		case <-changed:
		case <-timer.C:
			wait = 0
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-h.ending:
			wait = 0
		case <-drain:
			wait = 0
		}
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

func readReplyOf(res ReadResult) readReply {
	r := readReply{Last: res.Last, Packets: make([]storedPacket, len(res.Records))}
	if res.Gap != nil {
		r.Gap = &wireGap{From: res.Gap.From, To: res.Gap.To}
	}
	for i, rec := range res.Records {
		r.Packets[i] = packetOf(rec)
	}
	return r
}
