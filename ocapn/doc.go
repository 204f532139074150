// Package ocapn is an OCapN peer: CapTP sessions between nodes, as the
// OCapN pre-standardization group's drafts specify them
// (github.com/ocapn/ocapn, draft-specifications/), so that Go programs
// can reach, and be reached by, Spritely Goblins, Agoric's endo and the
// other OCapN implementations.
//
// A [Node] serves sessions on its netlayers and opens them to other
// peers. Objects ([Object]) registered under swiss numbers are what a
// peer's bootstrap fetch gives; objects returned from deliveries or passed
// as arguments are exported as they travel; a peer's objects arrive as
// [*Ref], which can be sent messages. [Node.Enliven] turns a [Sturdyref]
// (ocapn://DESIGNATOR.TRANSPORT/s/SWISS?HINTS) into a Ref.
//
// # What a session does
//
//   - op:start-session: a fresh Ed25519 key pair per session, the
//     location signed as <my-location location>, the peer's signature
//     checked, version 1.0 only; one session per peer, crossed hellos
//     resolved as the draft says (the lower identifier's session loses).
//   - op:deliver and op:deliver-only to exports and to answers (promise
//     pipelining: a message to an answer waits for its resolution), the
//     result sent to the resolve-me object as fulfill or break.
//   - op:listen on promises this node exported; op:gc-export and
//     op:gc-answer free exports and answers, and this node gives back
//     the peer's objects once Go's collector frees the last Ref to them;
//     op:abort ends a session.
//   - Third-party handoffs: a Ref held through one session and sent on
//     another travels as a signed handoff-give, the object deposited as a
//     gift with its own node; a handoff-give received becomes a [*Promise]
//     that resolves to a Ref held directly through the object's node
//     (withdraw-gift), not through the introducer.
//
// Netlayers: tcp-testing-only ([ListenTestingOnlyTCP]), and any other
// [Netlayer] (package ocapn/bokboknet runs sessions over bokbok's
// authenticated encryption).
//
// # Values
//
// Message arguments and results are Syrup values (package syrup), with
// references in them as *Ref (the peer's), Object or *Promise (this
// node's), and Go nil as OCapN's undefined, the record <void>.
//
// # Concurrency
//
// A node has one event loop goroutine: every Object's Deliver, every
// promise callback and all session state run on it, one at a time, so
// objects need no locks and must not block. The node's and a Ref's
// methods may be called from any goroutine.
//
// # Hostile peers
//
// A peer's messages are decoded within [syrup.Limits] (bounded depth and
// size, iterative), and what it can make a session hold is bounded by
// [Config]: exports, imports, open answers, messages received and not yet
// handled (beyond which the node stops reading), messages queued for it
// (beyond which the session is aborted). A malformed message aborts its
// session with op:abort and a reason; a message whose arguments name
// nothing breaks, and the session goes on.
//
// The tcp-testing-only netlayer ([ListenTestingOnlyTCP]) is not secure; it
// exists for interoperability testing.
package ocapn
