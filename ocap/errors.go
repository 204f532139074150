package ocap

import (
	"errors"
	"fmt"

	"github.com/bokbok-go/bokbok"
)

var (
	// ErrDisconnected matches the error of every promise that was waiting on
	// a connection when it closed, and of every later send through a
	// reference imported over it. The error also wraps the connection's own
	// error (see bokbok.Conn.Err).
	ErrDisconnected = errors.New("ocap: connection lost")

	// ErrReleased is the error of a send through a reference after
	// [Ref.Release].
	ErrReleased = errors.New("ocap: reference released")

	// ErrVatClosed is the error of a message to an actor whose vat was
	// closed before the actor received it.
	ErrVatClosed = errors.New("ocap: vat closed")

	// ErrNotReference is the error of a message sent to a promise that
	// resolved to a value that is not a reference.
	ErrNotReference = errors.New("ocap: promise resolved to a value that is not a reference")

	// ErrNilRef is the error of a message sent through the zero [Ref].
	ErrNilRef = errors.New("ocap: send to a nil reference")

	// ErrNoVat is returned by [On] and [Spawn] when the context does not
	// belong to a vat's turn.
	ErrNoVat = errors.New("ocap: not running in a vat")

	// ErrPromiseCycle is the error of a message sent to a promise that
	// resolves, through other promises, back to a promise it already went
	// through, and of a promise made to settle as a promise that settles
	// as it (see [Resolver.Fulfil]). Chains of promises longer than a few
	// thousand are treated as cycles too.
	ErrPromiseCycle = errors.New("ocap: promises resolve to each other in a cycle")

	// ErrTooManyPending is the error of a message sent to an unsettled
	// promise on which the most messages allowed already wait (see
	// [Node.MaxPendingPerPromise] and [DefaultMaxPendingPerPromise]).
	ErrTooManyPending = errors.New("ocap: too many messages wait on the promise")
)

// errQuestionsUsedUp is the error of a message that would need a question
// id beyond the largest (2^64-1): ids are never reused on a connection.
var errQuestionsUsedUp = errors.New("ocap: this connection has used up its question ids")

// Codes of the *bokbok.RemoteError values that the layer itself breaks
// promises with.
const (
	CodeNoMethod       = "ocap.no_method"        // the actor has no such method
	CodeBadArgs        = "ocap.bad_args"         // the arguments do not fit the method
	CodePanic          = "ocap.panic"            // the actor panicked
	CodeError          = "ocap.error"            // the actor returned a plain error (remote only)
	CodeNoObject       = "ocap.no_object"        // the message named an export or answer that does not exist
	CodeNotFound       = "ocap.not_found"        // the bootstrap object has no such name
	CodeDisconnected   = "ocap.disconnected"     // a connection further along the path was lost
	CodeVatClosed      = "ocap.vat_closed"       // the target's vat was closed
	CodeReleased       = "ocap.released"         // the peer sent through a reference it had released
	CodeNotReference   = "ocap.not_reference"    // the target promise resolved to a value that is not a reference
	CodePromiseCycle   = "ocap.promise_cycle"    // the target promise resolves to itself through other promises
	CodeTooManyPending = "ocap.too_many_pending" // too many messages already wait on the target promise
)

// ProtocolError is the error a session ends with when a peer breaks the
// capability protocol (for example it releases more references than it
// was sent). Remote reports that the peer detected the violation and sent
// op:abort.
type ProtocolError struct {
	Reason string
	Remote bool
}

// Error describes the violation, saying which side found it.
func (e *ProtocolError) Error() string {
	if e.Remote {
		return "ocap: peer aborted the session: " + e.Reason
	}
	return "ocap: protocol violation: " + e.Reason
}

func protocolErrorf(format string, args ...any) *ProtocolError {
	return &ProtocolError{Reason: fmt.Sprintf(format, args...)}
}

// disconnected wraps the cause of a lost connection so that it matches both
// ErrDisconnected and the cause.
type disconnected struct{ cause error }

func (e *disconnected) Error() string {
	if e.cause == nil {
		return ErrDisconnected.Error()
	}
	return ErrDisconnected.Error() + ": " + e.cause.Error()
}

func (e *disconnected) Unwrap() []error { return []error{ErrDisconnected, e.cause} }

// remoteErrorf is a *bokbok.RemoteError made by this layer.
func remoteErrorf(code, format string, args ...any) error {
	return bokbok.Errorf(code, format, args...)
}

// wireError gives the code and message an error travels with in op:break.
func wireError(err error) (code, msg string) {
	var re *bokbok.RemoteError
	switch {
	case errors.As(err, &re):
		return re.Code, re.Message
	case errors.Is(err, ErrDisconnected):
		return CodeDisconnected, err.Error()
	case errors.Is(err, ErrVatClosed):
		return CodeVatClosed, err.Error()
	case errors.Is(err, ErrReleased):
		return CodeReleased, err.Error()
	case errors.Is(err, ErrNotReference):
		return CodeNotReference, err.Error()
	case errors.Is(err, ErrPromiseCycle):
		return CodePromiseCycle, err.Error()
	case errors.Is(err, ErrTooManyPending):
		return CodeTooManyPending, err.Error()
	}
	return CodeError, err.Error()
}
