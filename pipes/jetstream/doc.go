// Package jetstream keeps a pipes hub's logs on NATS JetStream, so that
// several hub processes serve one network: a node may connect to any of
// them (NodeConfig.Hubs), and when its hub dies it reconnects to another
// and carries on, losing and duplicating nothing.
//
// It is a nested module, so that programs which keep the embedded
// default (pipes.OpenBoltLog) do not depend on NATS.
//
// # Use
//
// Open a Log on the JetStream cluster and give it to each hub:
//
//	l, err := jetstream.Open(ctx, jetstream.Config{URL: "nats://10.0.0.1:4222,nats://10.0.0.2:4222"})
//	...
//	hub, err := pipes.NewHub(pipes.HubConfig{Log: l, Dir: "/var/lib/hub", UserKeys: keys.UserKeys})
//
// Every hub of a network must use the same Config.Prefix, and should use
// the same Replicas, Retention and transient bounds. Dir is optional with
// a shared log: it holds only the hub's search index, a cache rebuilt
// from the log when it is missing.
//
// # How it is stored
//
//   - A bucket (Prefix_PIPELINES) holds one key per pipeline: its name,
//     kind, owner, members and a random epoch, as JSON. A pipeline is
//     created by creating its key, so of two hubs creating the same name
//     at once, one wins and both return its pipeline. Members change by
//     compare-and-set on the key.
//   - Each pipeline has a stream of its own, named after a hash of its
//     name and its epoch, with a subject per sender (a hash of the user
//     and the node). A persistent pipeline's stream is on file storage
//     with Replicas copies; a transient pipeline's is in memory, a window
//     of TransientWindow records.
//   - A record's Seq is its stream sequence. Each record carries its Seq,
//     time, sender and the sender's packet number N before the data.
//   - Appends are exact across hubs: the entries of one Append are
//     published as one atomic batch whose first message expects both the
//     stream's last sequence and the sender's last sequence on its own
//     subject. Two hubs appending for the same sender (a node failing
//     over with packets in flight) cannot both succeed; the loser reads
//     the sender's last N again and acknowledges what was already
//     appended as duplicates. A publish whose answer was lost is sent
//     again under the same expectations, which makes a second copy
//     impossible.
//   - With a Retention, a second bucket (Prefix_MARKS) keeps each
//     sender's highest N, for when retention has removed the sender's
//     last record.
//   - Every stream republishes the headers of each stored record on a
//     notification subject, which is how a hub learns that another hub
//     appended (pipes.SharedLog's Watch); a watch of the pipelines bucket
//     tells it of new pipelines and member changes.
//
// # Bounds
//
// JetStream applies Config.Retention (MaxAge, MaxMsgs, MaxBytes with
// DiscardOld) to persistent streams, and TransientWindow and
// TransientBytes to transient ones. Streams refuse messages larger than
// MaxPacketSize plus a small record prefix. Each operation is bounded by
// Config.Timeout. The limits on what a node may ask of a hub are the
// hub's (pipes.HubConfig); the JetStream servers are trusted, like the
// embedded database file.
//
// # Failures
//
// A JetStream server that fails is replaced by the stream's other
// replicas; the log retries reads and appends while a stream elects a new
// leader, within Config.Timeout. A full JetStream storage makes Append
// fail with an error matching pipes.ErrFull; other failures match
// pipes.ErrStorage.
package jetstream
