package pipes

import "github.com/vmihailenco/msgpack/v5"

// The hub's methods and their messages (PROTOCOL.md §21). Every message
// is a MessagePack map keyed by the field names in the tags; a receiver
// ignores keys it does not know.
const (
	methodOpen    = "pipes.open"
	methodPut     = "pipes.put"
	methodRead    = "pipes.read"
	methodHistory = "pipes.history"
	methodList    = "pipes.list"
	methodMembers = "pipes.members"
	methodSearch  = "pipes.search"
)

// openRequest asks the hub for a pipeline, creating it if Create is set
// (then Encrypted and Members say what it is created with).
type openRequest struct {
	Name       string   `msgpack:"name"`
	Persistent bool     `msgpack:"persistent"`
	Create     bool     `msgpack:"create"`
	Encrypted  bool     `msgpack:"encrypted,omitempty"`
	Members    []string `msgpack:"members,omitempty"`
}

// openReply describes the pipeline.
type openReply struct {
	Name       string   `msgpack:"name"`
	Persistent bool     `msgpack:"persistent"`
	Epoch      []byte   `msgpack:"epoch"` // 16 bytes, new each time the pipeline is created
	First      uint64   `msgpack:"first"` // first seq still held; last+1 if none
	Last       uint64   `msgpack:"last"`  // last seq appended; 0 if none yet
	MaxPacket  int      `msgpack:"max_packet"`
	MaxBatch   int      `msgpack:"max_batch"`
	Encrypted  bool     `msgpack:"encrypted,omitempty"`
	Owner      string   `msgpack:"owner,omitempty"`
	Members    []string `msgpack:"members,omitempty"`
}

// membersRequest replaces the members of a private pipeline.
type membersRequest struct {
	Pipeline string   `msgpack:"pipeline"`
	Members  []string `msgpack:"members"`
}

// putRequest carries packets of one node for one pipeline, in
// increasing N.
type putRequest struct {
	Pipeline string       `msgpack:"pipeline"`
	Node     []byte       `msgpack:"node"` // 16 bytes
	Packets  []wirePacket `msgpack:"packets"`
}

type wirePacket struct {
	N    uint64 `msgpack:"n"`
	Data []byte `msgpack:"data"`
}

// putReply acknowledges each packet of the request, in order.
type putReply struct {
	Acks []wireAck `msgpack:"acks"`
}

type wireAck struct {
	Seq  uint64 `msgpack:"seq"`  // 0 for a duplicate
	Time int64  `msgpack:"time"` // Unix nanoseconds; 0 for a duplicate
	Dup  bool   `msgpack:"dup,omitempty"`
}

// readRequest asks for the packets after After, waiting up to WaitMillis
// for one if there is none yet.
type readRequest struct {
	Pipeline   string `msgpack:"pipeline"`
	After      uint64 `msgpack:"after"`
	Max        int    `msgpack:"max"`
	WaitMillis int64  `msgpack:"wait"`
}

// readReply holds packets in increasing Seq, and the gap before them if
// some after After are gone.
type readReply struct {
	Packets []storedPacket `msgpack:"packets"`
	Gap     *wireGap       `msgpack:"gap,omitempty"`
	Last    uint64         `msgpack:"last"`
}

// rawReadReply is a readReply whose packets are records as the embedded
// log stores them (the same maps).
type rawReadReply struct {
	Packets []msgpack.RawMessage `msgpack:"packets"`
	Gap     *wireGap             `msgpack:"gap,omitempty"`
	Last    uint64               `msgpack:"last"`
}

type wireGap struct {
	From uint64 `msgpack:"from"`
	To   uint64 `msgpack:"to"`
}

// storedPacket is a packet as the hub keeps and sends it.
type storedPacket struct {
	Seq    uint64 `msgpack:"seq"`
	Time   int64  `msgpack:"time"`
	Sender string `msgpack:"sender"`
	Node   []byte `msgpack:"node"`
	N      uint64 `msgpack:"n"`
	Data   []byte `msgpack:"data"`
}

// historyRequest asks for a page of a persistent pipeline's log: Seqs
// From to To and hub times Since to Until (Unix nanoseconds), each bound
// included and 0 for none; the oldest Max of them, or the newest.
type historyRequest struct {
	Pipeline string `msgpack:"pipeline"`
	From     uint64 `msgpack:"from"`
	To       uint64 `msgpack:"to"`
	Since    int64  `msgpack:"since"`
	Until    int64  `msgpack:"until"`
	Max      int    `msgpack:"max"`
	Newest   bool   `msgpack:"newest"`
}

// historyReply holds the page in increasing Seq, and in Next the Seq the
// next page starts from (a From, or a To for Newest), 0 if none.
type historyReply struct {
	Packets []storedPacket `msgpack:"packets"`
	Next    uint64         `msgpack:"next"`
	Last    uint64         `msgpack:"last"`
}

// listReply lists the pipelines the user may read or write.
type listReply struct {
	Pipelines []listedPipeline `msgpack:"pipelines"`
}

type listedPipeline struct {
	Name       string   `msgpack:"name"`
	Persistent bool     `msgpack:"persistent"`
	Last       uint64   `msgpack:"last"`
	Encrypted  bool     `msgpack:"encrypted,omitempty"`
	Members    []string `msgpack:"members,omitempty"`
}

// searchRequest asks for the packets of a pipeline that best match the
// words of Query, at most Max of them.
type searchRequest struct {
	Pipeline string `msgpack:"pipeline"`
	Query    string `msgpack:"query"`
	Max      int    `msgpack:"max"`
}

// searchReply holds the matching packets, best first, with their scores.
type searchReply struct {
	Packets   []storedPacket `msgpack:"packets"`
	Scores    []float64      `msgpack:"scores"`
	Truncated bool           `msgpack:"truncated,omitempty"`
}
