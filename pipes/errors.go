package pipes

import (
	"errors"
	"fmt"
	"strings"

	"github.com/bokbok-go/bokbok"
)

// Error codes of the hub's remote errors (PROTOCOL.md, "Pipelines").
const (
	CodeUnknownPipeline = "pipes.unknown"   // no such pipeline, and creating it was not asked
	CodeKindMismatch    = "pipes.kind"      // the pipeline exists with the other kind
	CodeForbidden       = "pipes.forbidden" // the user may not do this on this pipeline
	CodeTooLarge        = "pipes.too_large" // a packet is larger than the hub accepts
	CodeLimit           = "pipes.limit"     // a hub limit was reached (pipelines, reads, transient memory)
	CodeBadRequest      = "pipes.bad"       // a malformed request (name, node ID, batch, order of numbers)
	CodeStorage         = "pipes.storage"   // the hub could not read or write its log
	CodeFull            = "pipes.full"      // the hub's storage is full
)

// Sentinel errors; errors.Is matches them against the hub's remote errors
// too.
var (
	ErrUnknownPipeline = errors.New("pipes: no such pipeline")
	ErrKindMismatch    = errors.New("pipes: the pipeline exists with the other kind")
	ErrForbidden       = errors.New("pipes: forbidden")
	ErrTooLarge        = errors.New("pipes: packet too large")
	ErrLimit           = errors.New("pipes: limit reached")
	ErrBadRequest      = errors.New("pipes: bad request")
	ErrBadName         = fmt.Errorf("%w: bad pipeline name", ErrBadRequest)
	ErrStorage         = errors.New("pipes: storage failed")
	ErrFull            = errors.New("pipes: storage full")
	ErrOutboxFull      = errors.New("pipes: outbox full")
	ErrClosed          = errors.New("pipes: closed")
	ErrIdentity        = errors.New("pipes: the directory belongs to another user")
	ErrInUse           = errors.New("pipes: the directory is in use by another process")
)

// codes pairs each code with its sentinel, the more specific first
// (a full database is also a storage failure).
var codes = []struct {
	code string
	err  error
}{
	{CodeUnknownPipeline, ErrUnknownPipeline},
	{CodeKindMismatch, ErrKindMismatch},
	{CodeForbidden, ErrForbidden},
	{CodeTooLarge, ErrTooLarge},
	{CodeLimit, ErrLimit},
	{CodeBadRequest, ErrBadRequest},
	{CodeFull, ErrFull},
	{CodeStorage, ErrStorage},
}

func codeError(code string) error {
	for _, c := range codes {
		if c.code == code {
			return c.err
		}
	}
	return nil
}

// HubError is an error the hub returned for a request: the sentinel it
// matches (errors.Is) and the hub's message.
type HubError struct {
	Code    string // one of the Code constants
	Message string
}

// Error returns the hub's message.
func (e *HubError) Error() string { return "pipes: the hub refused: " + e.Message }

// Is matches the sentinel error of the code.
func (e *HubError) Is(target error) bool {
	sentinel := codeError(e.Code)
	return sentinel != nil && (sentinel == target || sentinel == ErrFull && target == ErrStorage)
}

// hubError turns a remote error of the hub into a *HubError; other
// errors are returned unchanged.
func hubError(err error) error {
	var re *bokbok.RemoteError
	if errors.As(err, &re) {
		if codeError(re.Code) != nil {
			return &HubError{Code: re.Code, Message: re.Message}
		}
	}
	return err
}

// remoteErr makes the remote error the hub sends for err.
func remoteErr(err error) error {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return bokbok.Errorf(c.code, "%s", strings.TrimPrefix(err.Error(), "pipes: "))
		}
	}
	return err
}

// StorageError is a failure of a node's or hub's database: its path and
// the cause. It matches ErrStorage, and ErrFull when the database
// reached its size limit.
type StorageError struct {
	Path string
	Op   string
	Err  error
}

// Error names the operation, the path and the cause.
func (e *StorageError) Error() string {
	return fmt.Sprintf("pipes: %s %s: %v", e.Op, e.Path, e.Err)
}

// Unwrap returns the cause.
func (e *StorageError) Unwrap() error { return e.Err }

// Is matches ErrStorage.
func (e *StorageError) Is(target error) bool { return target == ErrStorage }
