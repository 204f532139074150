package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/bokbok-go/bokbok/pipes"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// apiError is an error a JetStream server answered.
type apiError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("jetstream: %s (%d, code %d)", e.Description, e.ErrCode, e.Code)
}

// JetStream error codes the log tells apart.
const (
	errCodeAccountResources     = 10002
	errCodeInsufficientRes      = 10023
	errCodeStorageResources     = 10047
	errCodeMsgTooLarge          = 10054
	errCodeStreamNotFound       = 10059
	errCodeWrongLastSeq         = 10071
	errCodeStoreFailed          = 10077
	errCodeWrongLastSeqConstant = 10164
	errCodeNoMessage            = 10037
)

// isConflict reports whether a publish failed on one of its expectations
// (another writer got there first): re-read and try again.
func isConflict(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && (ae.ErrCode == errCodeWrongLastSeq || ae.ErrCode == errCodeWrongLastSeqConstant)
}

// isFull reports whether err says the JetStream storage is full.
func isFull(err error) bool {
	var ae *apiError
	if errors.As(err, &ae) {
		switch ae.ErrCode {
		case errCodeAccountResources, errCodeInsufficientRes, errCodeStorageResources:
			return true
		case errCodeStoreFailed:
			d := strings.ToLower(ae.Description)
			return strings.Contains(d, "maximum bytes") || strings.Contains(d, "maximum messages") || strings.Contains(d, "no space") || strings.Contains(d, "insufficient")
		}
	}
	var je jetstream.JetStreamError
	if errors.As(err, &je) && je.APIError() != nil {
		switch je.APIError().ErrorCode {
		case errCodeAccountResources, errCodeInsufficientRes, errCodeStorageResources:
			return true
		}
	}
	return false
}

// isTransient reports whether err may pass by itself: the connection is
// down or reconnecting, a stream has no leader for the moment, a request
// timed out.
func isTransient(err error) bool {
	if errors.Is(err, errConnLost) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected) || errors.Is(err, jetstream.ErrNoStreamResponse) {
		return true
	}
	var ae *apiError
	if errors.As(err, &ae) && ae.Code == 503 && !isFull(err) {
		return true
	}
	var je jetstream.JetStreamError
	if errors.As(err, &je) && je.APIError() != nil && je.APIError().Code == 503 {
		return true
	}
	return false
}

// fullError is a JetStream storage that is full: it matches pipes.ErrFull
// and pipes.ErrStorage.
type fullError struct{ err error }

func (e *fullError) Error() string { return "pipes: storage full: " + e.err.Error() }
func (e *fullError) Unwrap() error { return e.err }
func (e *fullError) Is(target error) bool {
	return target == pipes.ErrFull || target == pipes.ErrStorage
}

// storageErr maps a failure of JetStream to the errors of package pipes:
// a full storage matches pipes.ErrFull (and pipes.ErrStorage), anything
// else pipes.ErrStorage; errors of pipes pass unchanged.
func storageErr(op string, err error) error {
	if err == nil {
		return nil
	}
	for _, known := range []error{pipes.ErrUnknownPipeline, pipes.ErrBadRequest, pipes.ErrStorage, pipes.ErrKindMismatch, pipes.ErrClosed} {
		if errors.Is(err, known) {
			return err
		}
	}
	if isFull(err) {
		return &fullError{fmt.Errorf("%s: %w", op, err)}
	}
	return fmt.Errorf("%w: jetstream: %s: %w", pipes.ErrStorage, op, err)
}
