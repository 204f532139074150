package pipes

import (
	"context"
	"time"
)

// Log stores a hub's pipelines: which exist, of which kind, and the
// packets of the persistent ones. OpenBoltLog returns the default, an
// embedded database in one file; a hub can be given another through
// HubConfig.Log. Implementations must be safe for concurrent use.
type Log interface {
	// Pipelines lists the pipelines the log holds.
	Pipelines(ctx context.Context) ([]PipelineInfo, error)

	// Info describes one pipeline; ErrUnknownPipeline if there is none.
	Info(ctx context.Context, name string) (PipelineInfo, error)

	// Create records a new pipeline with a fresh random epoch and returns
	// it, or returns the existing pipeline of that name unchanged,
	// whatever its kind.
	Create(ctx context.Context, spec PipelineSpec) (PipelineInfo, error)

	// SetMembers replaces the members of a private pipeline and returns
	// the pipeline; ErrUnknownPipeline if there is none.
	SetMembers(ctx context.Context, name string, members []string) (PipelineInfo, error)

	// Append appends the entries of one sender to a persistent pipeline,
	// durably, before it returns, and returns one Ack per entry. Entries
	// come in strictly increasing N; an entry whose N is not above the
	// highest N already appended for that sender on that pipeline is a
	// duplicate: it is not appended, and its Ack says so. An error means
	// none of them was appended. It fails with ErrUnknownPipeline for a
	// pipeline that does not exist, and with an error matching ErrFull
	// when the storage is full.
	Append(ctx context.Context, pipeline string, from Sender, entries []Entry) ([]Ack, error)

	// Read returns the records of a persistent pipeline with Seq above
	// after, in order: at most max records and, beyond the first, at most
	// maxBytes of them (as encoded in a read reply, about 70 bytes more
	// than their data). If records after after were removed by retention,
	// Gap covers them.
	Read(ctx context.Context, pipeline string, after uint64, max, maxBytes int) (ReadResult, error)

	// Trim removes the records of every persistent pipeline that the
	// retention's MaxAge no longer keeps at now.
	Trim(ctx context.Context, now time.Time) error

	// Close closes the log; appends in progress finish first.
	Close() error
}

// PipelineSpec is what a pipeline is created with.
type PipelineSpec struct {
	Name       string
	Persistent bool
	Encrypted  bool     // its packets are sealed by its members (see PipelineOptions)
	Owner      string   // the user who created it
	Members    []string // the users who may use it (the owner among them); none for every user
}

// PipelineInfo describes a pipeline of a Log.
type PipelineInfo struct {
	PipelineSpec
	Epoch [16]byte // random, chosen when the pipeline was created
	First uint64   // the first Seq still held; Last+1 when none is
	Last  uint64   // the last Seq appended; 0 before the first
}

// Private reports whether the pipeline names its members.
func (in *PipelineInfo) Private() bool { return len(in.Members) > 0 }

// SharedLog is a Log that several hubs use at once, so that a node may
// connect to any of them. A hub with a SharedLog keeps transient
// pipelines in it too (Read reports a Gap past what it holds), and learns
// from Watch what the other hubs change.
type SharedLog interface {
	Log

	// Watch calls f for every change any hub makes to the log, until stop
	// is called: a pipeline created or its members changed (Meta), or
	// packets appended. Calls may be coalesced or come late, never lost
	// while the log is connected; f must return quickly and may be called
	// from several goroutines. stop returns once no call is in progress.
	Watch(f func(Change)) (stop func())
}

// Change is what Watch reports.
type Change struct {
	Pipeline string
	Meta     bool // the pipeline was created, or its members changed
}

// Sender is the author of entries: the authenticated user and the node.
type Sender struct {
	User string
	Node NodeID
}

// Entry is a packet to append: the sender's number for it and its data.
type Entry struct {
	N    uint64
	Data []byte
}

// Ack says what became of an entry.
type Ack struct {
	Seq  uint64    // the Seq it was given; 0 for a duplicate
	Time time.Time // when it was appended; zero for a duplicate
	Dup  bool      // already appended before, not appended again
}

// Record is a packet of a pipeline's log.
type Record struct {
	Seq    uint64
	Time   time.Time
	Sender Sender
	N      uint64
	Data   []byte
}

// ReadResult is what Read returns.
type ReadResult struct {
	Records []Record
	Gap     *Gap // records removed after the read's starting point, or nil
	Last    uint64
}

// Retention bounds what a persistent pipeline's log keeps. A zero field
// sets no bound; the zero Retention keeps everything. Records are removed
// oldest first, on append for MaxPackets and MaxBytes and by the hub's
// periodic trim (and on open) for MaxAge.
type Retention struct {
	MaxAge     time.Duration // remove records older than this
	MaxPackets uint64        // keep at most this many records per pipeline
	MaxBytes   int64         // keep at most this many bytes of data per pipeline
}
