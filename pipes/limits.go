package pipes

import "time"

// Defaults of the hub's limits (HubConfig). Each bounds something a node,
// even an authenticated one, could otherwise grow without end.
const (
	DefaultMaxPacketSize   = 256 << 10 // bytes of data in one packet
	DefaultMaxBatch        = 256       // packets in one put or one read
	DefaultMaxReadBytes    = 1 << 20   // bytes of packets, as encoded, in one read's reply (beyond its first)
	DefaultMaxPipelines    = 1024      // pipelines a hub holds
	DefaultMaxReadsPerConn = 64        // reads one connection may have waiting at once
	DefaultMaxWait         = 30 * time.Second
	DefaultTransientWindow = 1024    // packets a transient pipeline holds for slow listeners
	DefaultTransientBytes  = 1 << 20 // bytes of data a transient pipeline holds for them
	DefaultTransientMemory = 64 << 20
	MaxNameLen             = 200 // bytes of a pipeline name
)

// putBatchBytes bounds the data a node sends in one put (beyond its first
// packet).
const putBatchBytes = 1 << 20
