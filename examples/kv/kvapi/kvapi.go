// Package kvapi is the interface of the key-value service of
// examples/kv/server and examples/kv/client: the request and reply types,
// and the methods, declared once for both sides.
package kvapi

import "github.com/bokbok-go/bokbok"

// The methods. The server registers a handler with, for example,
// kvapi.Get.Handle(mux, f), and the client calls it with
// kvapi.Get.Call(ctx, conn, req): the types are checked on both sides.
var (
	Get    = bokbok.Method[GetRequest, Entry]("kv.get")       // a key's entry, or CodeNotFound
	Put    = bokbok.Method[PutRequest, Entry]("kv.put")       // the new entry, or CodeConflict
	Delete = bokbok.Method[DeleteRequest, Entry]("kv.delete") // the entry deleted, or CodeNotFound or CodeConflict
	List   = bokbok.Method[ListRequest, []Entry]("kv.list")   // the entries under a prefix, by key
	// Watch answers the entries under the prefix, as List does, and from
	// then on the server calls the client back with a Changed
	// notification for every change under it, until the connection ends.
	Watch = bokbok.Method[ListRequest, []Entry]("kv.watch")
	// Poll waits until the key's version is no longer the one given (a
	// put makes it newer, a delete 0) and answers the key's entry. It
	// waits until the request's deadline at most, and answers the entry
	// unchanged if the server shuts down meanwhile.
	Poll = bokbok.Method[PollRequest, Entry]("kv.poll")
)

// Changed is the notification method of a watch (see Watch): the server
// sends it an Entry, with Version 0 if the key was deleted.
const Changed = "kv.changed"

// Entry is a key's value and version. A version is the store's revision
// when the key was last written: it grows with every write and is never
// reused, so a key deleted and written again has a new one. Version 0
// means no such key.
type Entry struct {
	Key     string `msgpack:"key"`
	Value   string `msgpack:"value,omitempty"`
	Version uint64 `msgpack:"version"`
}

type GetRequest struct {
	Key string `msgpack:"key"`
}

// PutRequest writes a value. With IfVersion it is a compare-and-set: it
// fails with CodeConflict unless the key's version is *IfVersion (0: the
// key must not exist).
type PutRequest struct {
	Key       string  `msgpack:"key"`
	Value     string  `msgpack:"value"`
	IfVersion *uint64 `msgpack:"if_version,omitempty"`
}

// DeleteRequest deletes a key; IfVersion as in PutRequest.
type DeleteRequest struct {
	Key       string  `msgpack:"key"`
	IfVersion *uint64 `msgpack:"if_version,omitempty"`
}

type ListRequest struct {
	Prefix string `msgpack:"prefix"`
}

type PollRequest struct {
	Key     string `msgpack:"key"`
	Version uint64 `msgpack:"version"` // the version the caller has seen; 0: none
}

// The error codes of the service (see bokbok.RemoteError).
const (
	CodeNotFound  = "kv.not_found" // no such key
	CodeConflict  = "kv.conflict"  // a compare-and-set found another version
	CodeForbidden = "kv.forbidden" // no tenant, or one the server does not serve
)

// Realm is the server's realm (bokbok.Config.Realm and Server.Realm): it
// is bound into the secure handshake, so the server and its clients must
// use the same one.
const Realm = "bokbok-kv"

// The metadata the client sends with every request.
const (
	MDTenant    = "tenant"     // the tenant whose keys to use: each has its own
	MDRequestID = "request-id" // an id for the server's log
)
