// Package bokboknet is an OCapN netlayer ([ocapn.Netlayer]) that carries
// CapTP sessions over secure bokbok connections: each node proves it knows
// a pre-shared key, and everything after the handshake is encrypted and
// authenticated (bokbok's secure mode, PROTOCOL.md "Secure mode"). Go nodes
// get OCapN's semantics (sturdyrefs, promise pipelining, third-party
// handoffs) with bokbok's authenticated encryption instead of the insecure
// tcp-testing-only netlayer.
//
//	keys, _ := bokbok.OpenKeysFile("peers.txt") // one "peer key" line per node
//	nl, err := bokboknet.Listen("localhost:7000", bokboknet.Config{
//		Name:     "alice",
//		PeerKeys: keys.UserKeys,
//	})
//	node := ocapn.NewNode(ocapn.Config{})
//	node.AddNetlayer(nl)
//
// # Locations
//
// The transport is "bokbok" ([Transport]). A node's location is
//
//	ocapn://NAME.bokbok?addr=ADDR
//
// that is ocapn.Peer{Transport: "bokbok", Designator: NAME, Hints:
// {"addr": ADDR}}, where NAME is the node's Config.Name and ADDR is where
// it listens, written as bokbok.ParseAddr reads it ("tcp://host:port",
// "host:port", "unix:///run/app.sock", "./app.sock").
//
// # What is authenticated
//
// The designator is the node's name, and it is bound to the pre-shared
// keys both ways:
//
//   - Dialing a peer named D, a node opens a secure bokbok connection as
//     the user named by its own Config.Name, in the realm D, with the key
//     Config.PeerKeys(D) gives. Whoever answers has proved that it knows
//     that key for that user in realm D; a listener with another name
//     fails the handshake, because the realm is bound into it. The OCapN
//     session then also checks that the peer's op:start-session names D.
//   - Accepting, a node (realm: its own name) looks up the keys of the
//     user the dialer claims to be with Config.PeerKeys, so only a holder
//     of a key this node knows can open a session at all. The dialer's
//     user name is its designator: the first message on the connection
//     must be an op:start-session whose location has transport "bokbok"
//     and exactly that designator, or the connection is closed before the
//     OCapN session sees it. A peer cannot claim to be another node.
//
// So one key per pair of nodes suffices: the key node A and node B share
// is found by A under "B" and by B under "A", and serves in both
// directions (the realm and user differ, so a handshake in one direction
// cannot be replayed in the other). A node may list up to
// bokbok.MaxUserKeys keys per peer during a rotation; a dial tries them in
// order while the peer refuses them. The binding is as strong as the keys'
// secrecy: a key known to more than its two nodes (one key for a whole
// cluster, say) lets every holder pose as any node that uses it. What is
// not authenticated: the hints, which say only where to dial (a wrong
// address fails the handshake). There is no insecure mode: Listen refuses
// a Config without PeerKeys.
//
// # Wire
//
// A session's bytes travel as bokbok notifications of method "ocapn.bytes"
// ([Method]), each a MessagePack bin of at most 64 KiB ([MaxChunk]), in
// order. bokbok runs a connection's notifications one at a time, in the
// order they were sent, with a flow-control window, so the stream is
// ordered and backpressured: a reader that falls behind makes the peer's
// writes wait. Requests, and notifications of any other method, are
// refused (a notification of another method, or a chunk that is not a bin
// of at most 64 KiB, closes the connection).
//
// # Bounds
//
// What a peer can make a node hold, per connection: Config.ReceiveBuffer
// bytes read from the connection and not yet read by the session (default
// 256 KiB), plus bokbok.Config.NotifyBytes of notifications not yet
// handled (default here 1 MiB) and bokbok.Config.MaxReceiveBytes for
// requests, which are refused (default here 1 MiB). Connections accepted and not yet
// taken by Accept wait in a queue of Config.AcceptBacklog (default 16);
// one arriving when it is full is closed. The dialer's op:start-session
// may be at most 16 KiB. bokbok's own server bounds apply to connections
// opening (Server.MaxOpening, Server.MaxHandshakes, the handshake timeout).
package bokboknet
