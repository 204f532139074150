package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/bokbok-go/bokbok/pipes"
	"github.com/nats-io/nats.go"
)

// reader receives the replies of batch direct gets on one wildcard
// inbox, each get on its own token.
type reader struct {
	nc     *nats.Conn
	sub    *nats.Subscription
	prefix string

	mu   sync.Mutex
	next uint64
	gets map[string]chan *nats.Msg
}

func newReader(nc *nats.Conn) (*reader, error) {
	r := &reader{nc: nc, prefix: nc.NewRespInbox(), gets: map[string]chan *nats.Msg{}}
	sub, err := nc.Subscribe(r.prefix+".*", r.route)
	if err != nil {
		return nil, err
	}
	// The gets' channels hold what they asked for: never drop here.
	sub.SetPendingLimits(-1, -1)
	r.sub = sub
	return r, nil
}

func (r *reader) route(m *nats.Msg) {
	tok := m.Subject[len(r.prefix)+1:]
	r.mu.Lock()
	ch := r.gets[tok]
	r.mu.Unlock()
	if ch != nil {
		select {
		case ch <- m:
		default: // more than was asked for: the get fails on its timeout
		}
	}
}

func (r *reader) close() { r.sub.Unsubscribe() }

// directBatch is a batch direct get: at most batch messages of stream
// from seq on, and no more once maxBytes are sent. A replica of the
// stream answers, the one on the connected server if it has one, so the
// answer may lag the leader by the replication's delay. It returns the
// messages, and the stream's last sequence as that replica knows it (0 if
// no message was found; not to be trusted with noHdr, as the server then
// does not count down the pending messages).
//
// With noHdr the messages come without their headers: the server then
// skips making a header block for each, and the client parsing it.
func (r *reader) directBatch(ctx context.Context, lost <-chan struct{}, stream string, seq uint64, batch, maxBytes int, noHdr bool) ([]*nats.Msg, uint64, error) {
	r.mu.Lock()
	r.next++
	tok := strconv.FormatUint(r.next, 36)
	ch := make(chan *nats.Msg, batch+2)
	r.gets[tok] = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.gets, tok)
		r.mu.Unlock()
	}()
	req, _ := json.Marshal(struct {
		Seq      uint64 `json:"seq"`
		Batch    int    `json:"batch"`
		MaxBytes int    `json:"max_bytes,omitempty"`
		NoHdr    bool   `json:"no_hdr,omitempty"`
	}{seq, batch, maxBytes, noHdr})
	if err := r.nc.PublishRequest("$JS.API.DIRECT.GET."+stream, r.prefix+"."+tok, req); err != nil {
		return nil, 0, err
	}
	var msgs []*nats.Msg
	for {
		select {
		case m := <-ch:
			switch status := m.Header.Get("Status"); status {
			case "":
				msgs = append(msgs, m)
				if len(msgs) > batch {
					return nil, 0, errors.New("jetstream: direct get sent more than asked")
				}
			case "204": // end of the batch
				pending, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
				lastSent, _ := strconv.ParseUint(m.Header.Get("Nats-Last-Sequence"), 10, 64)
				return msgs, lastSent + pending, nil
			case "404":
				return nil, 0, nil
			case "503":
				return nil, 0, nats.ErrNoResponders
			default:
				return nil, 0, fmt.Errorf("jetstream: direct get: %s %s", status, m.Header.Get("Description"))
			}
		case <-lost:
			return nil, 0, errConnLost
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
}

// Read returns the records after after, from a batch direct get (one
// round trip for up to max records). A replica that lags behind a Seq the
// log knows to be stored (from an ack or a notification) is asked again
// for a moment; if it still lags, Read returns what it has and the
// pipeline's watchers are told to read again shortly.
func (l *Log) Read(ctx context.Context, pipeline string, after uint64, max, maxBytes int) (pipes.ReadResult, error) {
	if err := l.enter(); err != nil {
		return pipes.ReadResult{}, err
	}
	defer l.leave()
	max = min(std(max, 1), 1000)
	ctx, cancel := l.opCtx(ctx)
	defer cancel()
	p, err := l.pipe(ctx, pipeline)
	if err != nil {
		return pipes.ReadResult{}, storageErr("read", err)
	}
	reason := pipes.GapRetention
	if !p.persistent {
		reason = pipes.GapOverrun
	}
	// The server counts a message's subject, headers and payload, more
	// than a read reply takes: ask for a little more, and cut below.
	ask := maxBytes + max*384
	for attempt := 0; ; attempt++ {
		// A get whose answer was lost (its replica went away) is sent
		// again.
		actx, acancel := context.WithTimeout(ctx, min(time.Second<<min(attempt, 1), lastAttempt))
		msgs, last, err := l.rd.directBatch(actx, l.connLost(), p.stream, after+1, max, ask, p.persistent)
		acancel()
		if err != nil {
			if isTransient(err) && ctx.Err() == nil && l.sleep(ctx, 20*time.Millisecond<<min(attempt, 4)) {
				if errors.Is(err, nats.ErrNoResponders) {
					if _, err := l.ensureAgain(ctx, p); err != nil && !isTransient(err) {
						return pipes.ReadResult{}, err
					}
				}
				continue
			}
			return pipes.ReadResult{}, storageErr("read", err)
		}
		res := pipes.ReadResult{}
		size := 0
		prev := after
		for _, m := range msgs {
			// A persistent record holds its Seq; a transient one's is in
			// the headers.
			var seq uint64
			if !p.persistent {
				if seq, err = strconv.ParseUint(m.Header.Get(hdrSequence), 10, 64); err != nil {
					return pipes.ReadResult{}, storageErr("read", fmt.Errorf("direct get: bad sequence %q", m.Header.Get(hdrSequence)))
				}
			}
			rec, err := decodeRecord(seq, m.Data)
			if err != nil {
				return pipes.ReadResult{}, storageErr("read", err)
			}
			if rec.Seq <= prev {
				return pipes.ReadResult{}, storageErr("read", fmt.Errorf("stream %s: record %d after %d", p.stream, rec.Seq, prev))
			}
			prev = rec.Seq
			n := len(rec.Data) + len(rec.Sender.User) + recordOverhead
			if len(res.Records) > 0 && size+n > maxBytes {
				break
			}
			size += n
			res.Records = append(res.Records, rec)
		}
		known := p.known.Load()
		if len(res.Records) > 0 {
			if !p.persistent {
				p.seen(last)
			}
			p.seen(prev)
			res.Last = max64(p.known.Load(), known)
			if first := res.Records[0].Seq; first > after+1 {
				res.Gap = &pipes.Gap{Pipeline: pipeline, From: after + 1, To: first - 1, Reason: reason}
			}
			return res, nil
		}
		if after >= known {
			res.Last = known
			return res, nil
		}
		// Nothing here, and the log knows of records after after: were
		// they removed, or does this replica lag?
		st, err := l.streamState(ctx, p)
		if err != nil {
			return pipes.ReadResult{}, err
		}
		res.Last = st.LastSeq
		switch {
		case st.LastSeq <= after:
			return res, nil
		case st.Msgs == 0 || st.FirstSeq > after+1:
			to := min(st.LastSeq, st.FirstSeq-1)
			if st.Msgs == 0 {
				to = st.LastSeq
			}
			res.Gap = &pipes.Gap{Pipeline: pipeline, From: after + 1, To: to, Reason: reason}
			return res, nil
		}
		if attempt >= 5 || !l.sleep(ctx, time.Millisecond<<attempt) {
			l.wakeLater(p, 50*time.Millisecond)
			return res, nil
		}
	}
}

func std(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

func max64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}
