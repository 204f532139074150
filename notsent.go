package bokbok

import "errors"

// ErrNotSent matches the error of a request or notification that was
// never sent: the connection had closed, or was draining after a graceful
// shutdown, before any of it reached the wire. The peer never saw it, so
// it did not run, and sending it again (on another connection) is safe.
// The error matches its reason too (ErrClosed or ErrShutdown), so test
// for ErrNotSent first.
var ErrNotSent = errors.New("bokbok: not sent")

// notSentError marks an error as one of a message that was never sent.
type notSentError struct{ err error }

func (e *notSentError) Error() string        { return e.err.Error() + " (not sent)" }
func (e *notSentError) Unwrap() error        { return e.err }
func (e *notSentError) Is(target error) bool { return target == ErrNotSent }

// notSent wraps err, the reason a message was not sent, unless it is nil
// or already marked.
func notSent(err error) error {
	if err == nil || errors.Is(err, ErrNotSent) {
		return err
	}
	return &notSentError{err}
}
