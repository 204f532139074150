package bokbok

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"
)

// StatsHandler receives the statistics of a connection's calls and of
// connections opening and closing (see Config.Stats). Its methods are
// called synchronously from the connection's goroutines, so they must be
// quick and must not block; they may be called from many goroutines at
// once. The values are passed by value: a handler that keeps nothing
// costs the connection no allocation.
type StatsHandler interface {
	// HandleCall is called once for every request and notification, sent
	// or served, when it is finished: a sent request when its reply (or
	// failure) is known, a sent notification when it is queued, a served
	// request when its reply is queued, a served notification when its
	// handler returned, and a refused request when its refusal is queued.
	HandleCall(CallStats)

	// HandleConn is called when a connection opens, when it closes, and
	// (on a Server) when one is refused during its opening.
	HandleConn(ConnStats)
}

// CallStats describes one finished call.
type CallStats struct {
	Conn         *Conn
	Served       bool          // the peer's call, served by this side; false for a call this side made
	Notification bool          // a notification (no reply)
	Refused      bool          // served: refused without running (busy, canceled before it ran, malformed)
	Method       string        // the method name, "" if none (or unknown, for some refusals)
	RequestBytes int           // the encoded message body, header included; 0 if unknown
	ReplyBytes   int           // the encoded reply body; 0 for notifications and failures before a reply
	Duration     time.Duration // sent: from the call to its end; served: from the message being whole to the reply being queued
	Code         string        // the error code sent or received (see RemoteError); "" for success and for local failures
	Err          error         // nil on success; otherwise why the call failed
}

// ConnStats describes a connection opening, closing or being refused.
type ConnStats struct {
	Conn    *Conn    // nil for a refused connection
	Remote  net.Addr // the peer's address
	Closed  bool     // the connection closed (else it opened, or was refused)
	Refused bool     // a Server refused the connection during its opening
	Err     error    // why it closed or was refused
}

// clientStats reports a call this side made.
func (c *Conn) clientStats(o *Outgoing, start time.Time, err error) {
	st := CallStats{Conn: c, Notification: o.notify, Method: o.method, RequestBytes: o.reqBytes,
		Duration: time.Since(start), Err: err}
	if err == nil && o.resp != nil {
		st.ReplyBytes = len(o.resp.raw)
	}
	if err != nil {
		var re *RemoteError
		if errors.As(err, &re) {
			st.Code = re.Code
		}
	}
	c.cfg.Stats.HandleCall(st)
}

// servedStats reports a served request or notification.
func (c *Conn) servedStats(m *inMsg, replyBytes int, failed bool, err error) {
	st := CallStats{Conn: c, Served: true, Notification: m.kind == kindNotify, Method: m.req.method,
		RequestBytes: m.size, Duration: time.Since(m.start)}
	if failed {
		if err == nil {
			err = errors.New("the reply could not be sent")
		}
		st.Err = err
		st.Code, _ = errorCode(err)
	} else {
		st.ReplyBytes = replyBytes
	}
	c.cfg.Stats.HandleCall(st)
}

// refusedStats reports a request refused without running.
func (c *Conn) refusedStats(m *inMsg, rerr *RemoteError) {
	st := CallStats{Conn: c, Served: true, Refused: true, Method: m.req.method, RequestBytes: m.size, Code: rerr.Code, Err: rerr}
	if !m.start.IsZero() {
		st.Duration = time.Since(m.start)
	}
	c.cfg.Stats.HandleCall(st)
}

// connStats reports a connection opening or closing.
func (c *Conn) connStats(closed bool, err error) {
	if c.cfg.Stats != nil {
		c.cfg.Stats.HandleConn(ConnStats{Conn: c, Remote: c.nc.RemoteAddr(), Closed: closed, Err: err})
	}
}

// errorCode is the code and message an ERROR carries for err. A wrapped
// *RemoteError keeps its code, and its text appears in the message once,
// without its own "remote error [code]" prefix: fmt.Errorf("lookup: %w",
// Errorf("kv.not_found", "no key")) is sent as "lookup: no key".
func errorCode(err error) (code, message string) {
	message = err.Error()
	var re *RemoteError
	switch {
	case errors.As(err, &re):
		code = re.Code
		message = strings.Replace(message, re.Error(), re.Message, 1)
	case errors.Is(err, context.DeadlineExceeded):
		code = CodeDeadline
	case errors.Is(err, context.Canceled):
		code = CodeCanceled
	}
	return code, message
}
