package bokbok

import (
	"context"
	"errors"
	"fmt"
)

// Sentinel errors for conditions. Test for them with errors.Is: errors
// returned by this package often wrap several of them (a call that failed
// because the connection was closed by a keepalive timeout matches both
// ErrClosed and ErrKeepaliveTimeout).
var (
	// ErrClosed reports that the connection is closed. Every call that was
	// pending when a connection closed fails with an error matching
	// ErrClosed; the error also wraps the cause (io.EOF, ErrKeepaliveTimeout,
	// a *ProtocolError, a network error, ErrShutdown) when there is one.
	ErrClosed = errors.New("bokbok: connection closed")

	// ErrShutdown reports that the connection is draining after a graceful
	// shutdown by either side: requests in flight finish, new ones are
	// refused. A request refused this way was never sent.
	ErrShutdown = errors.New("bokbok: connection shutting down")

	// ErrUnfinished matches every *ShutdownError: a graceful shutdown
	// ended with work still in flight.
	ErrUnfinished = errors.New("bokbok: shutdown left work unfinished")

	// ErrKeepaliveTimeout reports that the peer sent nothing at all (not even
	// a keepalive reply) for longer than the configured keepalive interval
	// plus timeout.
	ErrKeepaliveTimeout = errors.New("bokbok: keepalive timeout")

	// ErrProtocol matches every *ProtocolError.
	ErrProtocol = errors.New("bokbok: protocol error")

	// ErrMessageTooLarge matches every *MessageTooLargeError, and remote
	// errors whose code is CodeTooLarge.
	ErrMessageTooLarge = errors.New("bokbok: message too large")

	// ErrBusy matches a remote error with code CodeBusy: the peer was at its
	// handler limit with a full queue and refused the request without
	// running it. Retrying later is safe.
	ErrBusy = errors.New("bokbok: peer busy")

	// ErrBadRequest matches a remote error with code CodeBadRequest: the
	// peer refused the request without running it because its message was
	// not well-formed MessagePack within the peer's limits (see
	// Config.MaxReceiveBytes). Sending it again unchanged fails again.
	ErrBadRequest = errors.New("bokbok: request refused as malformed")

	// ErrOverBudget reports that the peer made this side hold more than a
	// bound allows (Config.MaxReceiveBytes, Config.NotifyBytes, the number
	// of messages arriving at once, or calls it never answered); the
	// connection closes with it as the reason.
	ErrOverBudget = errors.New("bokbok: peer exceeded a limit")

	// ErrVersion reports that the peer speaks another protocol version.
	ErrVersion = errors.New("bokbok: protocol version mismatch")

	// ErrMode reports that one side wants a secure connection and the other
	// an insecure one. Neither side ever downgrades.
	ErrMode = errors.New("bokbok: security mode mismatch")

	// ErrHandshakeTimeout reports that the opening exchange did not finish
	// within Config.HandshakeTimeout.
	ErrHandshakeTimeout = errors.New("bokbok: handshake timed out")

	// ErrServerClosed is returned by Server.Serve and Server.ListenAndServe
	// after Server.Shutdown or Server.Close.
	ErrServerClosed = errors.New("bokbok: server closed")
)

// Error codes with a meaning to bokbok itself. Codes are strings on the wire;
// applications may use any code that does not start with "bokbok.".
const (
	CodeBusy       = "bokbok.busy"              // refused at the handler limit, never run
	CodePanic      = "bokbok.panic"             // the handler panicked
	CodeCanceled   = "bokbok.canceled"          // cancelled before it ran, or the handler returned context.Canceled
	CodeDeadline   = "bokbok.deadline_exceeded" // the handler returned context.DeadlineExceeded
	CodeTooLarge   = "bokbok.too_large"         // the reply exceeded the caller's message limit
	CodeNoHandler  = "bokbok.no_handler"        // the peer has no Handler for requests
	CodeBadRequest = "bokbok.bad_request"       // the request was malformed, or did not decode into the method's request type; never run
	CodeNoMethod   = "bokbok.no_method"         // the peer's Mux has no handler for the method; never run
)

// ErrNotPointer reports a Call or Invoke whose reply destination is not a
// non-nil pointer. The request was never sent.
var ErrNotPointer = errors.New("bokbok: the reply's destination must be a nil interface or a non-nil pointer")

// ErrUserWithoutKey reports a dialling Config with a User but no Key: a
// user name means a secure connection, which needs the user's key. Leave
// User empty for an insecure connection. Nothing was dialled.
var ErrUserWithoutKey = errors.New("bokbok: Config.User is set but Config.Key is not")

// ErrNoMethod matches a remote error with code CodeNoMethod: the peer
// serves no method of that name. The request never ran.
var ErrNoMethod = errors.New("bokbok: no such method")

// RemoteError is an error that happened on the peer: its handler returned an
// error or panicked, or the peer refused the request. Use errors.As to get
// it; errors.Is matches ErrBusy, ErrMessageTooLarge, ErrBadRequest, ErrNoMethod, context.Canceled and
// context.DeadlineExceeded by code.
//
// A handler may return a *RemoteError (or an error wrapping one) to choose
// the code the caller sees. A handler error matching context.Canceled or
// context.DeadlineExceeded is sent with CodeCanceled or CodeDeadline, so
// that errors.Is(err, context.DeadlineExceeded) holds on the caller
// whichever arrives first, its own deadline or the handler's answer. Any
// other error is sent with an empty code and its Error() text as the
// message.
//
// A *RemoteError may also carry details, one MessagePack value of
// structured data beside the code and message (see WithDetails and
// Details). They travel to peers that read message headers only.
type RemoteError struct {
	Code    string // optional machine-readable code; "" if none
	Message string // human-readable text

	md      *Metadata // the reply metadata received with the error (a pointer keeps RemoteError comparable)
	details *[]byte   // the details' msgpack encoding, attached or received; nil if none (a pointer, as md)
}

// Metadata returns the reply metadata that came with the error (see
// Request.SetReplyMetadata), or nil. A handler sets reply metadata on its
// Request, not on the *RemoteError it returns.
func (e *RemoteError) Metadata() Metadata {
	if e.md == nil {
		return nil
	}
	return *e.md
}

// Error formats the remote error with its code, if any.
func (e *RemoteError) Error() string {
	if e.Code == "" {
		return "bokbok: remote error: " + e.Message
	}
	return "bokbok: remote error [" + e.Code + "]: " + e.Message
}

// Is reports whether the remote error's code corresponds to target.
func (e *RemoteError) Is(target error) bool {
	switch target {
	case ErrBusy:
		return e.Code == CodeBusy
	case ErrMessageTooLarge:
		return e.Code == CodeTooLarge
	case ErrBadRequest:
		return e.Code == CodeBadRequest
	case ErrNoMethod:
		return e.Code == CodeNoMethod
	case context.Canceled:
		return e.Code == CodeCanceled
	case context.DeadlineExceeded:
		return e.Code == CodeDeadline
	}
	return false
}

// Errorf returns a *RemoteError with the given code and a formatted message,
// for handlers that want the caller to see a specific code. To attach
// structured details as well, see RemoteError.WithDetails.
func Errorf(code, format string, args ...any) error {
	return &RemoteError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ProtocolError reports bytes on the wire that break the protocol: garbage,
// truncated frames, unknown frame kinds, impossible lengths or ids. It ends
// the connection. errors.Is(err, ErrProtocol) matches it.
type ProtocolError struct {
	Reason string // what was wrong, e.g. "unknown frame kind 0x7f"
	Err    error  // an underlying cause such as io.ErrUnexpectedEOF, or nil
}

func (e *ProtocolError) Error() string {
	if e.Err != nil {
		return "bokbok: protocol error: " + e.Reason + ": " + e.Err.Error()
	}
	return "bokbok: protocol error: " + e.Reason
}

// Unwrap returns the underlying cause.
func (e *ProtocolError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrProtocol) true.
func (e *ProtocolError) Is(target error) bool { return target == ErrProtocol }

func protocolErrorf(format string, args ...any) *ProtocolError {
	return &ProtocolError{Reason: fmt.Sprintf(format, args...)}
}

// MessageTooLargeError reports a message larger than the limit that applies
// to it. When sending, the limit is the peer's advertised maximum; the call
// fails before anything is sent. errors.Is(err, ErrMessageTooLarge) matches.
//
// A received message can also be too large to decode: Decoded is then the
// estimated memory, in bytes, that decoding it would take, and Limit the
// receiver's Config.MaxReceiveBytes.
type MessageTooLargeError struct {
	Size    int   // encoded size of the message in bytes
	Decoded int64 // if not 0: the estimated decoded size, which exceeded Limit
	Limit   int   // the limit it exceeded
}

func (e *MessageTooLargeError) Error() string {
	if e.Decoded > 0 {
		return fmt.Sprintf("bokbok: message too large: %d bytes would take about %d bytes to decode, over the limit of %d", e.Size, e.Decoded, e.Limit)
	}
	return fmt.Sprintf("bokbok: message too large: %d bytes exceeds the limit of %d", e.Size, e.Limit)
}

// Is makes errors.Is(err, ErrMessageTooLarge) true.
func (e *MessageTooLargeError) Is(target error) bool { return target == ErrMessageTooLarge }

// closedError builds the error a connection closes with: it matches ErrClosed
// and wraps cause (which may be nil for a plain local Close).
func closedError(cause error) error {
	if cause == nil || errors.Is(cause, ErrClosed) {
		if cause == nil {
			return ErrClosed
		}
		return cause
	}
	return fmt.Errorf("%w: %w", ErrClosed, cause)
}

// ShutdownError is returned by a graceful shutdown that could not finish
// the work in flight: the connection closed (its context ended, or the
// peer or a Close cut it) while requests or notifications were still
// unanswered or unhandled. It matches ErrUnfinished and its cause: a
// shutdown cut short by its context matches that context's error.
type ShutdownError struct {
	// Outgoing counts this side's work the peer did not finish: requests
	// still waiting for their answer (calls whose caller had already given
	// up are not counted), and notifications whose handling the peer had
	// not yet confirmed with credit.
	Outgoing int
	// Incoming counts the peer's work this side did not finish: requests
	// arriving, queued or running, or whose answer was still waiting to
	// be written, and notifications arriving, waiting or running.
	Incoming int
	// Cause is why the connection closed early: the context's error, or
	// the connection's close reason (which matches ErrClosed).
	Cause error
}

func (e *ShutdownError) Error() string {
	return fmt.Sprintf("bokbok: shutdown left work unfinished (%d outgoing, %d incoming): %v", e.Outgoing, e.Incoming, e.Cause)
}

// Unwrap returns ErrUnfinished and the cause.
func (e *ShutdownError) Unwrap() []error { return []error{ErrUnfinished, e.Cause} }
