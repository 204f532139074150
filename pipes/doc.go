// Package pipes implements persistent pipelines over bokbok: named
// channels whose packets reach every node of a network, including nodes
// that were offline when the packets were put.
//
// A network is reached through a hub, a bokbok server in secure mode
// that authenticates every node by user name and key, so the sender of a
// packet is always an authenticated identity. A node keeps its state in
// a directory of its own: an embedded database holding its identity, its
// outbox of packets not yet acknowledged by the hub, and its cursors, the
// position in each pipeline up to which its listeners have been given
// every packet.
//
// A pipeline is either transient or persistent. A packet put on a
// transient pipeline reaches the nodes that are connected and listening
// when it is put; nothing is stored. A packet put on a persistent
// pipeline is first stored in the node's outbox (Put returns once it is
// on disk, connected or not), then sent to the hub whenever the node is
// connected; the hub appends it to the pipeline's log on disk before it
// acknowledges it, and drops a packet it has already appended. Every node
// listening on the pipeline is given every packet of the log in the hub's
// order, catching up from its cursor when it connects.
//
// What a listener is promised:
//
//   - Packets of one pipeline arrive in the hub's order (strictly
//     increasing Seq), one at a time, to each listener in turn.
//   - While the node's process lives, a listener is given each packet of a
//     persistent pipeline exactly once, whatever happens to connections
//     or to the hub.
//   - After the node's process crashes, the packets of the last two batches
//     delivered (each at most NodeConfig.MaxBatch, 256 by default) may be
//     given again, with the same ID and Seq; nothing is skipped. (The
//     cursor is committed after each batch, while the next is delivered.) A listener that
//     must never see a packet twice keeps the last Seq it handled. (The
//     exception: a hub whose log was lost and created anew, or restored
//     from an older copy, starts its Seqs again; the node reports that as
//     a Gap with reason GapReset before it delivers the new packets.)
//   - Packets the hub's retention removed before the node caught up are
//     never silently skipped: the pipeline's OnGap is called with the
//     range of sequence numbers the node will not see.
//
// Beyond delivery, a node reads a persistent pipeline's history
// (Pipeline.History), searches it by words (Pipeline.Search: full text,
// ranked, on the hub's index), and lists the pipelines it may use
// (Node.Pipelines). A pipeline created with members is private: the hub
// refuses everyone else. An encrypted pipeline is private and its
// packets are sealed by its members under keys the hub never sees (see
// PipelineOptions.Encrypted and Pipeline.Rotate); its search runs on the
// node's own copy.
//
// A hub keeps its pipelines in a Log: by default an embedded database in
// its directory. Several hubs can serve one network from a SharedLog
// (the nested module github.com/bokbok-go/bokbok/pipes/jetstream is one,
// on NATS JetStream); a node given their addresses (NodeConfig.Hubs)
// moves to another when its hub goes away, and carries on.
//
// The hub's wire protocol, its limits and the duties of a node are
// specified in PROTOCOL.md §21, for nodes and hubs written in other
// languages.
package pipes
