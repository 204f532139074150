package bokbok

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"time"
)

// The calling side: Request, Call, Notify and Ping. A request is encoded
// in the caller's goroutine, registered under a fresh id in the pending
// map, queued for the writer, and answered when the reader delivers the
// peer's RESPONSE or ERROR for that id.

// call is one request waiting for its answer.
type call struct {
	id   uint32
	out  *outMsg       // points at msg
	msg  outMsg        // the request, as queued (one allocation with the call)
	resp Response      // the answer, returned by Request: its body, buffer and metadata written by finish before done closes
	done chan struct{} // closed by finish, exactly once
	err  error         // written by finish before done closes

	asm       assembly  // the answer being received; owned by the reader
	asmKind   frameKind // RESPONSE or ERROR, once the first frame arrived
	asmHeader bool      // the answer's first frame had flagHeader
	abandoned bool      // the caller gave up; guarded by Conn.mu
}

// finish completes the call. Only the goroutine that removed the call from
// the pending map (under Conn.mu) may call it.
func (cl *call) finish(body, buf []byte, md Metadata, err error) {
	cl.resp.raw, cl.resp.buf, cl.resp.md, cl.err = body, buf, md, err // buf: the buffer body lies in (see Response.release)
	close(cl.done)
}

// Response is the peer's reply to a request.
type Response struct {
	raw   []byte
	md    Metadata
	limit int64       // the connection's MaxReceiveBytes, for Decode
	buf   []byte      // the buffer raw lies in, if it may go back to the pool (see release)
	kept  atomic.Bool // Raw was called, or a decoding may refer to buf: it never goes back
}

// Metadata returns the metadata the peer's handler attached to the reply
// (see Request.SetReplyMetadata), or nil. The caller must not modify it.
func (r *Response) Metadata() Metadata { return r.md }

// Decode decodes the reply into out, which must be a pointer, as
// msgpack.Unmarshal would. Decoded into an interface value, maps become
// map[string]any, integers int64 or uint64, floats float64, and MessagePack
// strings and binary values both become Go strings (decode into a []byte,
// or a msgpack.RawMessage to pass a value on unchanged, to keep binary
// values binary).
//
// A reply whose decoding is estimated to take more than the connection's
// Config.MaxReceiveBytes fails with a *MessageTooLargeError.
func (r *Response) Decode(out any) error {
	aliased, err := decodeAliasing(r.raw, out, r.limit)
	if aliased {
		r.kept.Store(true)
	}
	return err
}

// Raw returns the reply's msgpack encoding. The caller must not modify it.
func (r *Response) Raw() []byte {
	r.kept.Store(true)
	return r.raw
}

// release gives the reply's buffer back to the pool once Call or Invoke
// is done with it, unless somebody may still refer to it. r may be nil.
func (r *Response) release() {
	if r == nil || r.buf == nil || r.kept.Load() {
		return
	}
	putMsgBuf(r.buf)
	r.buf, r.raw = nil, nil
}

// Request sends msg to the peer's Handler and waits for the reply. msg may
// be any value msgpack can encode: maps, slices, strings, numbers, []byte,
// structs (fields named by their `msgpack` tags).
//
// A reply that is an error (the handler returned one or panicked, or the
// peer refused the request) is returned as a *RemoteError. If ctx ends
// first, Request returns ctx.Err() at once and tells the peer, whose
// handler context is then cancelled; ctx's deadline travels with the
// request, so the handler's context has it too. If the connection closes
// first, the error matches ErrClosed. Requests are at-most-once: a request
// that failed may or may not have run on the peer, except that one refused
// with ErrShutdown, ErrMessageTooLarge or ErrBusy (and not matching
// ErrClosed, which may wrap those as the reason a connection closed) never
// ran.
//
// The request carries the metadata of ctx (see WithMetadata) and no method
// name; RequestMethod names one. A request made with a context that
// descends from a handler's context is marked nested; see
// Config.MaxConcurrentHandlers.
func (c *Conn) Request(ctx context.Context, msg any) (*Response, error) {
	return c.RequestMethod(ctx, "", msg)
}

// RequestMethod is Request for a named method: the peer's Mux routes the
// request by it, and its handlers read it with Request.Method. A method
// name is at most 255 bytes; a peer that does not support method names
// (an earlier version of the protocol) is not sent the request, which
// fails with ErrNoHeaders.
func (c *Conn) RequestMethod(ctx context.Context, method string, msg any) (*Response, error) {
	if c.intercept != nil {
		o := &Outgoing{conn: c, method: method, md: OutgoingMetadata(ctx), msg: msg}
		err := c.intercept(ctx, o)
		if err != nil {
			return nil, err
		}
		return o.resp, nil
	}
	o := Outgoing{conn: c, method: method, md: OutgoingMetadata(ctx), msg: msg}
	if err := c.request(ctx, &o); err != nil {
		return nil, err
	}
	return o.resp, nil
}

// request sends o's request and waits for its answer, which it stores in
// o.resp.
func (c *Conn) request(ctx context.Context, o *Outgoing) (err error) {
	var start time.Time
	if c.cfg.Stats != nil {
		start = time.Now()
		defer func() { c.clientStats(o, start, err) }()
	}
	var timeout uint64
	if d, ok := ctx.Deadline(); ok {
		left := time.Until(d)
		if left <= 0 {
			return context.DeadlineExceeded
		}
		timeout = uint64((left + time.Microsecond - 1) / time.Microsecond)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	data, owner, flags, err := c.encodeOutgoing(o, true, timeout)
	if err != nil {
		return err
	}
	if ctx.Value(handlerKey{}) != nil {
		flags |= flagNested
	}
	cl := &call{done: make(chan struct{})}
	cl.msg = outMsg{kind: kindRequest, flags: flags, data: data, owner: owner}
	cl.out = &cl.msg
	c.mu.Lock()
	if err := c.refuseNewLocked(); err != nil {
		c.mu.Unlock()
		owner.done()
		return notSent(err)
	}
	cl.id = c.allocIDLocked()
	cl.msg.id = cl.id
	c.pending[cl.id] = cl // published with cl.out set: fail reads it
	c.mu.Unlock()

	if err := c.sendq.push(ctx, cl.out); err != nil {
		c.forget(cl)
		owner.done() // never queued
		if ctx.Err() == nil {
			err = notSent(err)
		}
		return err
	}
	select {
	case <-cl.done:
		if cl.err != nil {
			if err := ctxErrNow(ctx); err != nil {
				return err // our own deadline or cancellation came first
			}
			return cl.err
		}
		cl.resp.limit = int64(c.cfg.MaxReceiveBytes)
		o.resp = &cl.resp
		return nil
	case <-ctx.Done():
		c.abandon(cl, timeout > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded))
		return ctx.Err()
	}
}

// encodeOutgoing encodes o's message (with a REQUEST's timeout) and its
// header, if it has one and the peer reads headers, and checks it against
// the peer's size limit. It returns the frames' flags.
func (c *Conn) encodeOutgoing(o *Outgoing, request bool, timeout uint64) ([]byte, *encoder, uint8, error) {
	method, md := o.method, o.md
	if !c.peer.headers() {
		if method != "" {
			return nil, nil, 0, ErrNoHeaders
		}
		md = nil // metadata is left out for a peer that does not read it
	}
	data, owner, flags, err := encodeMessage(request, timeout, method, md, o.msg)
	if err != nil {
		return nil, nil, 0, err
	}
	o.reqBytes = len(data) - bodyLenSize
	if err := c.checkSize(data); err != nil {
		owner.done()
		return nil, nil, 0, err
	}
	return data, owner, flags, nil
}

// ctxErrNow is ctx.Err(), except that a deadline already past counts even
// before ctx's timer has fired.
func ctxErrNow(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// Call sends msg like Request and decodes the reply into out (a pointer;
// nil discards the reply).
func (c *Conn) Call(ctx context.Context, msg, out any) error {
	return c.Invoke(ctx, "", msg, out)
}

// Invoke calls method like RequestMethod and decodes the reply into out (a
// pointer; nil discards the reply). It makes a *Conn an Invoker, for the
// typed calls of this package. An out that is neither nil nor a non-nil
// pointer is refused with ErrNotPointer before anything is sent.
func (c *Conn) Invoke(ctx context.Context, method string, msg, out any) error {
	if err := checkOut(out); err != nil {
		return err
	}
	resp, err := c.RequestMethod(ctx, method, msg)
	if err != nil {
		return err
	}
	if out != nil {
		err = resp.Decode(out)
	}
	resp.release() // the reply is not returned: its buffer may be reused
	return err
}

// checkOut refuses a reply destination that is neither nil nor a non-nil
// pointer.
func checkOut(out any) error {
	if out != nil {
		if v := reflect.ValueOf(out); v.Kind() != reflect.Pointer || v.IsNil() {
			return fmt.Errorf("%w: got %T; nothing was sent", ErrNotPointer, out)
		}
	}
	return nil
}

// Notify sends msg to the peer's Handler without waiting for a reply; the
// handler's result is discarded. Notifications sent one after another on a
// connection reach the peer's handler in that order, one at a time.
// Notify returns once the message is queued for sending; it waits (until
// ctx ends) while the peer's notification window or the send queue is
// full. A notification that Notify returned nil for is delivered unless
// the connection fails first. It carries the metadata of ctx (see
// WithMetadata).
func (c *Conn) Notify(ctx context.Context, msg any) error {
	return c.NotifyMethod(ctx, "", msg)
}

// NotifyMethod is Notify for a named method, which the peer's Mux routes
// by; see RequestMethod.
func (c *Conn) NotifyMethod(ctx context.Context, method string, msg any) error {
	if c.intercept != nil {
		return c.intercept(ctx, &Outgoing{conn: c, method: method, md: OutgoingMetadata(ctx), msg: msg, notify: true})
	}
	o := Outgoing{conn: c, method: method, md: OutgoingMetadata(ctx), msg: msg, notify: true}
	return c.notify(ctx, &o)
}

// notify queues o's notification.
func (c *Conn) notify(ctx context.Context, o *Outgoing) (err error) {
	if c.cfg.Stats != nil {
		start := time.Now()
		defer func() { c.clientStats(o, start, err) }()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	data, owner, flags, err := c.encodeOutgoing(o, false, 0)
	if err != nil {
		return err
	}
	select {
	case c.notifySem <- struct{}{}:
	case <-ctx.Done():
		owner.done()
		return ctx.Err()
	}
	defer func() { <-c.notifySem }()
	size := int64(len(data) - bodyLenSize)
	c.mu.Lock()
	for c.err == nil && (c.notifyLimit == 0 || !c.notifyFitsLocked(size)) {
		if c.creditWait == nil {
			c.creditWait = make(chan struct{})
		}
		wait := c.creditWait
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			owner.done()
			return ctx.Err()
		}
		c.mu.Lock()
	}
	if err := c.refuseNewLocked(); err != nil {
		c.mu.Unlock()
		owner.done()
		return notSent(err)
	}
	c.notifyLimit--
	c.notifyOut += size
	c.notifySizes = append(c.notifySizes, size)
	id := c.allocIDLocked()
	c.mu.Unlock()
	if err := c.sendq.push(ctx, &outMsg{kind: kindNotify, flags: flags, id: id, data: data, owner: owner}); err != nil {
		c.mu.Lock()
		c.notifyLimit++ // never sent: the credit is still ours
		c.notifyOut -= size
		if n := len(c.notifySizes); n > 0 { // ours: notifySem kept others from appending
			c.notifySizes = c.notifySizes[:n-1]
		}
		c.mu.Unlock()
		owner.done()
		if ctx.Err() == nil {
			err = notSent(err)
		}
		return err
	}
	return nil
}

// notifyFitsLocked reports whether a notification of size bytes fits in
// the peer's notify_bytes: it does if it fits in what is left, or if none
// is outstanding. c.mu must be held.
func (c *Conn) notifyFitsLocked(size int64) bool {
	return c.notifyOut == 0 || c.notifyOut+size <= int64(c.peer.NotifyBytes)
}

// checkSize fails a message larger than the peer accepts, before sending.
func (c *Conn) checkSize(data []byte) error {
	if n := len(data) - bodyLenSize; n > int(c.peer.MaxMessageSize) {
		return &MessageTooLargeError{Size: n, Limit: int(c.peer.MaxMessageSize)}
	}
	return nil
}

// refuseNewLocked returns why a new request or notification may not be
// sent, or nil. c.mu must be held.
func (c *Conn) refuseNewLocked() error {
	switch {
	case c.err != nil:
		return c.err
	case c.goAwayRecv:
		return ErrShutdown // the send queue refuses too, once our GOAWAY is queued
	}
	return nil
}

// allocIDLocked returns a fresh nonzero id that no pending call holds.
// c.mu must be held.
func (c *Conn) allocIDLocked() uint32 {
	for {
		c.nextID++
		if _, busy := c.pending[c.nextID]; c.nextID != 0 && !busy {
			return c.nextID
		}
	}
}

// forget drops a call that was never queued.
func (c *Conn) forget(cl *call) {
	c.mu.Lock()
	if c.pending[cl.id] == cl {
		delete(c.pending, cl.id)
	}
	c.mu.Unlock()
	c.workDone()
}

// abandon handles a caller that stopped waiting. A request not yet started
// on the wire is withdrawn and its id freed. Otherwise the id stays
// reserved until the peer's answer (which the protocol guarantees) arrives
// and is dropped, and the peer is sent a CANCEL, unless expired says the
// caller's deadline passed and the whole request went out with it: the
// handler's context then ends by itself, with context.DeadlineExceeded.
func (c *Conn) abandon(cl *call, expired bool) {
	started, whole := c.sendq.withdraw(cl.out)
	c.mu.Lock()
	live := c.pending[cl.id] == cl
	over := false
	if live {
		if started {
			cl.abandoned = true
			c.abandoned++
			over = c.abandoned > maxAbandoned
		} else {
			delete(c.pending, cl.id)
		}
	}
	c.mu.Unlock()
	if live && started && !(expired && whole) {
		c.sendq.pushCtrl(kindCancel, cl.id)
	}
	if over {
		c.log.Warn("bokbok: peer does not answer abandoned calls", "remote", c.nc.RemoteAddr(), "abandoned", maxAbandoned)
		c.fail(fmt.Errorf("%w: more than %d calls were given up on and never answered", ErrOverBudget, maxAbandoned))
	}
	c.workDone()
}

// maxAbandoned bounds the calls a connection keeps waiting for answers
// after their callers gave up. The protocol promises every request an
// answer; a peer that keeps none of these promises is cut off.
const maxAbandoned = 1 << 16

// Ping sends a PING and waits for the peer's PONG, returning the round-trip
// time. It fails with ctx's error or an error matching ErrClosed.
func (c *Conn) Ping(ctx context.Context) (time.Duration, error) {
	ch := make(chan error, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return 0, c.err
	}
	if c.pings == nil {
		c.pings = make(map[uint32]chan error)
	}
	var id uint32
	for id == 0 || c.pings[id] != nil {
		c.pingSeq++
		id = c.pingSeq
	}
	c.pings[id] = ch
	c.mu.Unlock()
	start := time.Now()
	c.sendq.pushCtrl(kindPing, id)
	select {
	case err := <-ch:
		return time.Since(start), err
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pings, id)
		c.mu.Unlock()
		return 0, ctx.Err()
	}
}

// onPong delivers a PONG to the Ping waiting for it. Id 0 answers a
// keepalive PING; a PONG nobody waits for any more is dropped.
func (c *Conn) onPong(id uint32) {
	c.mu.Lock()
	ch := c.pings[id]
	delete(c.pings, id)
	c.mu.Unlock()
	if ch != nil {
		ch <- nil
	}
}
