package bokbok

import (
	"fmt"

	"github.com/bokbok-go/bokbok/internal/msgpackcheck"
)

// Admission of the peer's messages against the connection's budgets
// (Config.MaxReceiveBytes, Config.NotifyBytes, maxArriving). Each message
// is charged when its first frame arrives, before anything is allocated
// for it beyond that frame, and keeps its charge until its memory is let
// go: a request until its reply has been written, a notification until
// its handler has returned.

// maxArriving is how many of the peer's requests may be arriving (first
// frame seen, last frame not yet) at once: no more than could run or wait
// for a handler. Beyond it the peer is not merely busy but attacking, and
// the connection closes.
func (in *inbound) maxArriving() int {
	return 2*in.c.cfg.MaxConcurrentHandlers + max(in.c.cfg.MaxQueuedRequests, 0)
}

// startLocked registers the first frame of a new message (p is its
// payload) and charges it. in.mu is held.
func (in *inbound) startLocked(h frameHeader, p []byte) (*inMsg, error) {
	c := in.c
	// An id is free again once its answer is in the send queue: the peer
	// may reuse it as soon as the answer reaches it, which can be before
	// the handler's goroutine has taken the request off the live table.
	if m := in.live[h.id]; m != nil && !m.replied.Load() {
		return nil, protocolErrorf("%s with id %d, which a running request still holds", h.kind, h.id)
	}
	total, _ := announced(p) // a frame too short for it fails in the assembly
	m := &inMsg{id: h.id, kind: h.kind, nested: h.flags&flagNested != 0, header: h.flags&flagHeader != 0}
	switch h.kind {
	case kindNotify:
		if in.unacked++; in.unacked > c.cfg.NotifyWindow {
			return nil, protocolErrorf("peer sent more than the notify window of %d notifications", c.cfg.NotifyWindow)
		}
		if in.noteBytes > 0 && in.noteBytes+int64(total) > int64(c.cfg.NotifyBytes) {
			return nil, &ProtocolError{
				Reason: fmt.Sprintf("peer's unhandled notifications exceed notify_bytes (%d bytes held, %d more announced, limit %d)", in.noteBytes, total, c.cfg.NotifyBytes),
				Err:    ErrOverBudget,
			}
		}
		in.noteBytes += int64(total)
		m.charge = int64(total)
		in.notes = append(in.notes, m)
	case kindRequest:
		if in.arriving >= in.maxArriving() {
			return nil, &ProtocolError{
				Reason: fmt.Sprintf("peer has more than %d requests arriving at once (handler slots plus queue)", in.maxArriving()),
				Err:    ErrOverBudget,
			}
		}
		in.arriving++
		if in.fitsLocked(int64(total)) {
			in.held += int64(total)
			m.charge = int64(total)
		} else {
			m.asm.discard = true
			m.refuse = busyReceiving(int64(total), in.c.cfg.MaxReceiveBytes)
		}
	}
	in.asm[h.id] = m
	return m, nil
}

// fitsLocked reports whether n more bytes fit in MaxReceiveBytes. in.mu is
// held.
func (in *inbound) fitsLocked(n int64) bool {
	return in.held+in.replies.Load()+n <= int64(in.c.cfg.MaxReceiveBytes)
}

func busyReceiving(n int64, limit int) *RemoteError {
	return &RemoteError{Code: CodeBusy, Message: fmt.Sprintf(
		"this side holds too much for the connection's requests to take %d more bytes (limit %d); try again later", n, limit)}
}

// admitLocked checks a whole request's message and charges it the larger
// of its size and the estimated memory of decoding it (with that of its
// parsed header, if it had one). It returns the
// refusal if the request may not run; its charge is then released. in.mu
// is held.
func (in *inbound) admitLocked(m *inMsg) *RemoteError {
	limit := int64(in.c.cfg.MaxReceiveBytes)
	info, err := msgpackcheck.Check(m.req.raw)
	info.Decoded += m.hdrCost
	switch {
	case err != nil:
		in.releaseLocked(m)
		return &RemoteError{Code: CodeBadRequest, Message: "the message is not well-formed msgpack: " + err.Error()}
	case info.Decoded > limit:
		in.releaseLocked(m)
		return &RemoteError{Code: CodeTooLarge, Message: (&MessageTooLargeError{
			Size: len(m.req.raw), Decoded: info.Decoded, Limit: int(limit)}).Error()}
	case info.Decoded > m.charge:
		in.releaseLocked(m)
		if !in.fitsLocked(info.Decoded) {
			return busyReceiving(info.Decoded, int(limit))
		}
		in.held += info.Decoded
		m.charge = info.Decoded
	}
	return nil
}

// checkNote checks a whole notification's message and reports why it must
// be dropped, or nil. Notifications run one at a time, so decoding one
// needs only to fit in MaxReceiveBytes.
func (in *inbound) checkNote(raw []byte) error {
	info, err := msgpackcheck.Check(raw)
	switch {
	case err != nil:
		return fmt.Errorf("%w: the message is not well-formed msgpack: %v", ErrProtocol, err)
	case info.Decoded > int64(in.c.cfg.MaxReceiveBytes):
		return &MessageTooLargeError{Size: len(raw), Decoded: info.Decoded, Limit: in.c.cfg.MaxReceiveBytes}
	}
	return nil
}

// releaseLocked gives back a request's charge. in.mu is held.
func (in *inbound) releaseLocked(m *inMsg) {
	in.held -= m.charge
	m.charge = 0
}

// chargeReply charges a reply to MaxReceiveBytes until the writer has
// taken it.
func (in *inbound) chargeReply(out *outMsg) {
	out.charge = int64(len(out.data))
	out.budget = &in.replies
	in.replies.Add(out.charge)
}
