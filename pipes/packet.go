package pipes

import (
	"encoding/binary"
	"encoding/hex"
	"time"
)

// NodeID identifies one node: 16 random bytes chosen when its directory
// is first opened, kept for the directory's life.
type NodeID [16]byte

// String returns the node ID in hexadecimal.
func (id NodeID) String() string { return hex.EncodeToString(id[:]) }

// PacketID identifies a packet for its whole life: the ID of the node
// that put it and that node's number for it. A packet delivered again
// after a crash has the same ID.
type PacketID struct {
	Node NodeID
	N    uint64 // the putting node's number for the packet, from 1
}

// String returns the ID as the node ID in hexadecimal, "-" and N.
func (id PacketID) String() string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], id.N)
	return id.Node.String() + "-" + hex.EncodeToString(b[:])
}

// IsZero reports whether id is the zero PacketID.
func (id PacketID) IsZero() bool { return id == PacketID{} }

// Packet is one packet given to a listener.
type Packet struct {
	Pipeline string    // the pipeline's name
	ID       PacketID  // stable: the same on every node and on redelivery
	Seq      uint64    // the hub's sequence number in the pipeline, from 1
	Time     time.Time // when the hub appended (or forwarded) it
	Sender   string    // the authenticated user who put it
	Own      bool      // put by this node
	Data     []byte    // the packet's bytes; the listener may keep them
}

// Gap tells a listener that packets From to To (inclusive) of a pipeline
// will never reach it.
type Gap struct {
	Pipeline string
	From, To uint64
	Reason   GapReason
}

// Count returns how many packets the gap covers.
func (g Gap) Count() uint64 { return g.To - g.From + 1 }

// GapReason says why packets were missed.
type GapReason int

const (
	// GapRetention: the hub's retention removed the packets before the
	// node read them (a persistent pipeline).
	GapRetention GapReason = iota + 1
	// GapOverrun: the packets of a transient pipeline came faster than
	// the node's listeners took them and the hub no longer holds them.
	GapOverrun
	// GapReset: the hub's pipeline was created anew (its log was lost or
	// deleted), so the node's cursor no longer applies; From and To
	// cover the packets the node had delivered from the old log, and
	// delivery starts again from the new log's first packet.
	GapReset
)

// String names the reason.
func (r GapReason) String() string {
	switch r {
	case GapRetention:
		return "retention"
	case GapOverrun:
		return "overrun"
	case GapReset:
		return "reset"
	}
	return "unknown"
}
