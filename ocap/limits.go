package ocap

import (
	"fmt"
	"time"
)

// The defaults of the Node fields that bound what one peer can make a node
// hold; see Node.
const (
	DefaultMaxAnswers               = 16384            // Node.MaxAnswers
	DefaultMaxImports               = 65536            // Node.MaxImports
	DefaultMaxDescriptorsPerMessage = 4096             // Node.MaxDescriptorsPerMessage
	DefaultMaxQueuedMessages        = 65536            // Node.MaxQueuedMessages
	DefaultMaxQueuedBytes           = 32 << 20         // Node.MaxQueuedBytes: 32 MiB
	DefaultSendTimeout              = 30 * time.Second // Node.SendTimeout
	DefaultMaxVatQueued             = 65536            // Node.MaxVatQueued
)

// limits are a session's bounds, fixed when it starts.
type limits struct {
	answers, imports, descs int
	queued, queuedBytes     int
	pending                 int // MaxPendingPerPromise for the session's answers
	vatQueued               int
	sendTimeout             time.Duration
}

func orDefault[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// limits reads the node's bounds, with defaults for those not set.
func (n *Node) limits() limits {
	return limits{
		answers:     orDefault(n.MaxAnswers, DefaultMaxAnswers),
		imports:     orDefault(n.MaxImports, DefaultMaxImports),
		descs:       orDefault(n.MaxDescriptorsPerMessage, DefaultMaxDescriptorsPerMessage),
		queued:      orDefault(n.MaxQueuedMessages, DefaultMaxQueuedMessages),
		queuedBytes: orDefault(n.MaxQueuedBytes, DefaultMaxQueuedBytes),
		pending:     orDefault(n.MaxPendingPerPromise, DefaultMaxPendingPerPromise),
		sendTimeout: orDefault(n.SendTimeout, DefaultSendTimeout),
		vatQueued:   orDefault(n.MaxVatQueued, DefaultMaxVatQueued),
	}
}

// errTooManyPending is the error of a message sent to a promise on which
// limit messages already wait.
func errTooManyPending(limit int) error {
	return &limitError{sentinel: ErrTooManyPending, detail: fmt.Sprintf("%d messages already wait on the promise", limit)}
}

// limitError is a sentinel with details.
type limitError struct {
	sentinel error
	detail   string
}

func (e *limitError) Error() string { return e.sentinel.Error() + ": " + e.detail }
func (e *limitError) Unwrap() error { return e.sentinel }

// limitErrorf is the *ProtocolError of a session that a peer made exceed
// one of its bounds.
func limitErrorf(field string, format string, args ...any) *ProtocolError {
	return protocolErrorf("%s (Node.%s)", fmt.Sprintf(format, args...), field)
}
