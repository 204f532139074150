package jetstream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/bokbok-go/bokbok/pipes"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Append appends the entries of one sender; see pipes.Log. On a
// persistent pipeline it is exact across hubs: the sender's highest N
// is the N of its last record, on the sender's own subject, and the
// entries are published as one atomic batch whose first message expects
// both the stream's last sequence (so that times never go back) and the
// sender's last sequence (so that two hubs appending for the same sender
// cannot both succeed). A batch that loses a race is re-read and tried
// again until the operation's Timeout.
func (l *Log) Append(ctx context.Context, pipeline string, from pipes.Sender, entries []pipes.Entry) ([]pipes.Ack, error) {
	if err := l.enter(); err != nil {
		return nil, err
	}
	defer l.leave()
	if len(entries) == 0 {
		return nil, fmt.Errorf("%w: no packets", pipes.ErrBadRequest)
	}
	for i := 1; i < len(entries); i++ {
		if entries[i].N <= entries[i-1].N {
			return nil, fmt.Errorf("%w: packet numbers must increase", pipes.ErrBadRequest)
		}
	}
	ctx, cancel := l.opCtx(ctx)
	defer cancel()
	p, err := l.pipe(ctx, pipeline)
	if err != nil {
		return nil, storageErr("append", err)
	}
	if !p.persistent {
		return l.appendTransient(ctx, p, from, entries)
	}
	return l.appendPersistent(ctx, p, from, entries)
}

// appendTransient publishes the entries as they come: a transient
// pipeline drops no duplicates and its times are the hub's clock.
func (l *Log) appendTransient(ctx context.Context, p *pipe, from pipes.Sender, entries []pipes.Entry) ([]pipes.Ack, error) {
	now := l.now()
	subj := p.subjBase + senderKey(from)
	for backoff := 20 * time.Millisecond; ; backoff = min(2*backoff, 500*time.Millisecond) {
		msgs := l.messages(subj, from, 0, now.UnixNano(), entries)
		ack, err := l.publish(ctx, msgs, lastAttempt)
		if err == nil {
			p.seen(ack.Seq)
			acks := make([]pipes.Ack, len(entries))
			for i := range acks {
				acks[i] = pipes.Ack{Seq: ack.Seq - uint64(len(entries)-1-i), Time: now}
			}
			return acks, nil
		}
		// Only a publish nobody received is safe to send again: a
		// transient stream would keep both copies.
		if !errors.Is(err, nats.ErrNoResponders) || !l.sleep(ctx, backoff) {
			return nil, storageErr("append", err)
		}
		if _, err := l.ensureAgain(ctx, p); err != nil && !isTransient(err) {
			return nil, err
		}
	}
}

// messages makes the stream messages of entries, the first to be stored
// with Seq first (0 if unknown).
func (l *Log) messages(subj string, from pipes.Sender, first uint64, t int64, entries []pipes.Entry) []*nats.Msg {
	msgs := make([]*nats.Msg, len(entries))
	for i, e := range entries {
		var seq uint64
		if first > 0 {
			seq = first + uint64(i)
		}
		data := encodeRecord(make([]byte, 0, recordHeader+binary.MaxVarintLen64+len(from.User)+len(e.Data)), seq, t, from, e.N, e.Data)
		msgs[i] = &nats.Msg{Subject: subj, Data: data}
	}
	return msgs
}

func (l *Log) appendPersistent(ctx context.Context, p *pipe, from pipes.Sender, entries []pipes.Entry) ([]pipes.Ack, error) {
	sk := senderKey(from)
	subj := p.subjBase + sk
	p.wmu.Lock()
	defer p.wmu.Unlock()
	backoff := time.Millisecond
	var lastErr error
	tries := 0 // publishes sent
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if !l.sleep(ctx, backoff) {
				if lastErr == nil {
					lastErr = ctx.Err()
				}
				return nil, storageErr("append", lastErr)
			}
			backoff = min(2*backoff, 250*time.Millisecond)
		}
		if !p.tailOK {
			if err := l.loadTail(ctx, p); err != nil {
				lastErr = err
				if isTransient(err) {
					continue
				}
				return nil, storageErr("append", err)
			}
		}
		ss, ok := p.senders[sk]
		if !ok {
			var err error
			if ss, err = l.loadSender(ctx, p, subj); err != nil {
				lastErr = err
				if isTransient(err) {
					continue
				}
				return nil, storageErr("append", err)
			}
			if len(p.senders) >= maxSenderCache {
				clear(p.senders)
			}
			p.senders[sk] = ss
		}
		// The duplicates are the first entries, N increasing.
		dups := 0
		for dups < len(entries) && entries[dups].N <= ss.n {
			dups++
		}
		acks := make([]pipes.Ack, len(entries))
		for i := range dups {
			acks[i] = pipes.Ack{Dup: true}
		}
		if dups == len(entries) {
			// Nothing to append: wake the other hubs' readers anyway, in
			// case the hub that appended these died before it could.
			l.nc.Publish(p.notify, nil)
			return acks, nil
		}
		fresh := entries[dups:]
		t := max(l.now().UnixNano(), p.tailTime)
		// The expectation of the stream's last sequence makes the Seqs
		// certain: they are in the records, so that reads need no headers.
		msgs := l.messages(subj, from, p.tailSeq+1, t, fresh)
		msgs[0].Header = nats.Header{}
		msgs[0].Header.Set(hdrExpectedLastSeq, strconv.FormatUint(p.tailSeq, 10))
		msgs[0].Header.Set(hdrExpectedLastSubjSeq, strconv.FormatUint(ss.seq, 10))
		ack, err := l.publish(ctx, msgs, min(time.Second<<min(tries, 2), 4*time.Second))
		tries++
		if err != nil {
			lastErr = err
			switch {
			case isConflict(err):
				// Another hub appended meanwhile: read again.
				p.tailOK = false
				delete(p.senders, sk)
				if attempt < 3 {
					backoff = 0
				}
				continue
			case isFull(err):
				return nil, storageErr("append", err)
			case isTransient(err) || errors.Is(err, context.DeadlineExceeded):
				// The publish may have been stored, or may be stored
				// later: the expectations make a second copy impossible,
				// and reading again shows what became of it.
				p.tailOK = false
				delete(p.senders, sk)
				if errors.Is(err, nats.ErrNoResponders) {
					if _, err := l.ensureAgain(ctx, p); err != nil && !isTransient(err) {
						return nil, err
					}
				}
				backoff = max(backoff, 20*time.Millisecond)
				continue
			default:
				p.tailOK = false
				delete(p.senders, sk)
				return nil, storageErr("append", err)
			}
		}
		first := ack.Seq - uint64(len(fresh)-1)
		if first != p.tailSeq+1 {
			// Cannot be, the expectation held: the stream is not as the
			// log made it.
			p.tailOK = false
			delete(p.senders, sk)
			return nil, storageErr("append", fmt.Errorf("stream %s stored at %d, not %d as expected", p.stream, first, p.tailSeq+1))
		}
		for i := range fresh {
			acks[dups+i] = pipes.Ack{Seq: first + uint64(i), Time: time.Unix(0, t)}
		}
		p.tailOK, p.tailSeq, p.tailTime = true, ack.Seq, t
		last := fresh[len(fresh)-1].N
		p.senders[sk] = senderState{seq: ack.Seq, n: last}
		p.seen(ack.Seq)
		if l.marks != nil && p.retained.Load() {
			l.putMark(p, sk, last)
		}
		return acks, nil
	}
}

// sleep waits d, or less if ctx ends first (false then).
func (l *Log) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-l.end:
		return false
	}
}

// ensureAgain checks, after a publish nobody answered, that the stream
// exists (it may have been deleted, or never made by a hub that died
// after creating the pipeline), and makes it if not.
func (l *Log) ensureAgain(ctx context.Context, p *pipe) (uint64, error) {
	st, err := l.streamState(ctx, p)
	return st.LastSeq, err
}

// loadTail reads the stream's last sequence and the time of its last
// record, from the stream's leader.
func (l *Log) loadTail(ctx context.Context, p *pipe) error {
	m, err := l.msgGet(ctx, p.stream, 0, p.subjBase+"*")
	switch {
	case err == nil:
		t, _, ok := recordTimeN(m.Data)
		if !ok {
			return fmt.Errorf("record %d: bad format", m.Seq)
		}
		// The stream's last message may be newer still.
		p.tailSeq, p.tailTime = m.Seq, t
	case errors.Is(err, errNoMessage):
		// Empty: new, or everything removed by retention. Its last
		// sequence stays.
		st, err := l.streamState(ctx, p)
		if err != nil {
			return err
		}
		p.tailSeq, p.tailTime = st.LastSeq, 0
	default:
		var ae *apiError
		if errors.As(err, &ae) && ae.ErrCode == errCodeStreamNotFound {
			_, err = l.ensureAgain(ctx, p)
		}
		return err
	}
	p.tailOK = true
	p.seen(p.tailSeq)
	return nil
}

// loadSender reads where a sender stands: its last record on its
// subject, from the stream's leader, and, on a stream whose retention
// may have removed that record, its mark.
func (l *Log) loadSender(ctx context.Context, p *pipe, subj string) (senderState, error) {
	var ss senderState
	m, err := l.msgGet(ctx, p.stream, 0, subj)
	switch {
	case err == nil:
		_, n, ok := recordTimeN(m.Data)
		if !ok {
			return ss, fmt.Errorf("record %d: bad format", m.Seq)
		}
		ss = senderState{seq: m.Seq, n: n}
	case errors.Is(err, errNoMessage):
	default:
		return ss, err
	}
	if l.marks != nil && p.retained.Load() {
		e, err := l.marks.Get(ctx, p.markKey(subj[len(p.subjBase):]))
		if err == nil && len(e.Value()) == 8 {
			ss.n = max(ss.n, binary.BigEndian.Uint64(e.Value()))
		} else if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return ss, err
		}
	}
	return ss, nil
}

// markKey is the key of a sender's mark in the marks bucket.
func (p *pipe) markKey(sk string) string {
	return p.key + "." + fmt.Sprintf("%x", p.epoch[:8]) + "." + sk
}

// putMark records a sender's highest N in the marks bucket, without
// waiting: it only matters once retention has removed the sender's last
// record, and a mark that is late (or lost, if the hub dies now) means
// at worst that a packet sent again after that is appended twice.
func (l *Log) putMark(p *pipe, sk string, n uint64) {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], n)
	if _, err := l.js.PublishAsync("$KV."+l.cfg.marksBucket()+"."+p.markKey(sk), v[:]); err != nil {
		l.cfg.Logger.Warn("pipes/jetstream: writing a sender's mark failed", "pipeline", p.name, "err", err)
	}
}
