// Package ocap is a small object-capability layer on top of bokbok
// connections, in the spirit of Spritely Goblins' CapTP.
//
// A program spawns actors in vats and hands out references to them. A
// reference ([Ref]) can be sent a message whether its actor lives in this
// process or across a connection; references travel inside messages, at
// any depth, and the peer can invoke what it was handed and nothing else.
//
// # Words
//
//   - A [Vat] is an event loop: one goroutine that runs its actors one
//     message at a time, so actor code needs no locks. Actors in different
//     vats run in parallel.
//   - An actor is a Go value whose methods are invoked by name: any value
//     with exported methods, a [Methods] table, or an [Actor].
//   - [Ref.Send] (Goblins' <-) returns a [*Promise]; [Ref.SendOnly]
//     (<-np) returns nothing. [On] runs callbacks in the current vat when a
//     promise settles; [Promise.Await] waits for it outside any vat.
//   - A [Node] serves the capability protocol on bokbok connections (it is a
//     [bokbok.Handler]); a [Session] is its state for one connection: the
//     tables of exports, imports, questions and answers.
//
// # Messages are copies
//
// Arguments and results are encoded with msgpack when they are sent, also
// between two vats of one process, so actors never share memory. A [Ref]
// or [*Promise] inside an argument or result travels as a reference.
//
// # Ordering (E-order)
//
// Messages sent through one reference, from one goroutine, are delivered in
// the order they were sent, also when the reference is a promise that
// resolves meanwhile. Messages sent to a promise whose answer lives on the
// peer go out at once (promise pipelining) and keep travelling through that
// answer, even after it resolves: paths are never shortened across the
// wire, so no embargo is needed. PROTOCOL.md §19 gives the rules.
//
// # Garbage
//
// An import is released when the program calls [Ref.Release] or when Go's
// garbage collector finds it unreachable; the exporter then drops its
// entry. Releases carry counts, so a release racing a fresh export of the
// same object never frees it. Cycles across connections are not collected.
//
// # Hostile peers
//
// A peer can make a node hold only so much: the fields of [Node] bound
// its open answers, imports, references per message, queued messages and
// messages waiting on one answer, and how long a peer may leave the node's
// messages untaken; a peer that goes beyond them has its session aborted
// (or, for waiting messages, those messages broken). Promises that
// resolve to each other in a cycle break messages sent to them with
// [ErrPromiseCycle] instead of hanging, and chains of promises and
// pipelined messages as long as a peer likes are worked through without
// recursion. PROTOCOL.md §19.10 lists the bounds.
//
// A peer's messages are checked as they arrive. A question id that is not
// greater than every earlier one from that peer (0, reused, or lower)
// aborts the session with a [*ProtocolError], and so does a result holding
// a reference that is not a fixext 4 or whose index is beyond the
// message's references; such a reference in a message's arguments breaks
// that message (code ocap.bad_args) without delivering it, and the
// session goes on. A session that has asked question 2^64-1 breaks later
// questions locally, since ids are never reused.
//
// # Sturdyrefs
//
// A [Sturdyref] is a printable capability, a URI such as
// bokbok://host:7000/s/SWISS naming one object by a random swiss number.
// [Node.Register] makes one; [Node.Enliven] turns it into a live Ref from
// any process, over a secure connection whose key is derived from the swiss
// number (serve the node with [Node.UserKey]). Whoever holds the URI holds
// the capability, and nothing more. [Store] keeps swiss numbers across
// restarts. [Node.Listen] listens and sets [Node.Addr], the address
// sturdyrefs carry, from the listener. PROTOCOL.md §20 has the details.
//
// A Ref from Enliven breaks when its connection is lost. [Node.Hold]
// returns a [Persistent] instead: a handle that enlivens the sturdyref
// when it is used, and again after the connection was lost (the host
// restarted with its Store), with backoff; its OnEnliven hook sets up
// again what the host forgot. It sends each message at most once: one
// whose fate the lost connection left unknown is not resent.
//
// # Errors
//
// A promise breaks with the actor's error (a local actor's error value as
// is; from the peer a [*bokbok.RemoteError]), with a *bokbok.RemoteError
// whose code starts with "ocap." for failures of the layer itself (no such
// method, bad arguments, a panic in the actor), or with an error matching
// [ErrDisconnected] when the connection is lost.
package ocap
