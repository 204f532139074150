// Command server is an in-memory key-value store served with bokbok, to
// try with examples/kv/client. Its methods are declared in
// examples/kv/kvapi: kv.get, kv.put (with an optional compare-and-set on
// the version), kv.delete, kv.list, kv.watch (which calls the client back
// with a kv.changed notification for every change) and kv.poll (a long
// poll).
//
//	go run ./examples/kv/server                             # localhost:7071; makes a key
//	go run ./examples/kv/server -addr ./kv.sock -key-file demo.key
//	go run ./examples/kv/server -tenants acme,globex        # two stores
//
// Every request must name a tenant in its metadata, one of -tenants
// (default "default"); each tenant has a store of its own. It takes the
// key flags of examples/server (-user, -key, -key-file, -realm,
// -insecure), and stops gracefully on Ctrl-C or SIGTERM, ending long polls
// and watches early.
package main

import (
	"context"
	"flag"
	"log"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/examples/internal/exampleutil"
	"github.com/bokbok-go/bokbok/examples/kv/kvapi"
)

const defaultAddr = "localhost:7071"

func main() {
	addr := flag.String("addr", defaultAddr, `address to listen on: "host:port", or a Unix socket path such as "./kv.sock"`)
	tenants := flag.String("tenants", "default", "the tenants served, separated by commas; each has a store of its own")
	keys := exampleutil.ServerKeyFlags() // -insecure, -user, -key, -key-file, -realm
	verbose := flag.Bool("v", false, "log the library's debug records too")
	flag.Parse()
	exampleutil.SetupLog("kv-server: ", *verbose)
	ctx, stop := exampleutil.SignalContext()
	defer stop()

	stores := map[string]*store{}
	for _, t := range strings.Split(*tenants, ",") {
		stores[t] = &store{entries: map[string]kvapi.Entry{}, changed: make(chan struct{}), watchers: map[*watcher]bool{}}
	}
	conns := &exampleutil.ConnLog{}

	mux := bokbok.NewMux()
	kvapi.Get.Handle(mux, func(ctx context.Context, r kvapi.GetRequest) (kvapi.Entry, error) {
		return storeOf(ctx).get(r.Key)
	})
	kvapi.Put.Handle(mux, func(ctx context.Context, r kvapi.PutRequest) (kvapi.Entry, error) {
		return storeOf(ctx).write(r.Key, r.Value, r.IfVersion, false)
	})
	kvapi.Delete.Handle(mux, func(ctx context.Context, r kvapi.DeleteRequest) (kvapi.Entry, error) {
		return storeOf(ctx).write(r.Key, "", r.IfVersion, true)
	})
	kvapi.List.Handle(mux, func(ctx context.Context, r kvapi.ListRequest) ([]kvapi.Entry, error) {
		return storeOf(ctx).list(r.Prefix, nil), nil
	})
	kvapi.Watch.Handle(mux, func(ctx context.Context, r kvapi.ListRequest) ([]kvapi.Entry, error) {
		return storeOf(ctx).list(r.Prefix, bokbok.RequestFromContext(ctx).Conn()), nil
	})
	kvapi.Poll.Handle(mux, func(ctx context.Context, r kvapi.PollRequest) (kvapi.Entry, error) {
		log.Printf("%s: kv.poll %q: waiting for a version other than %d", conns.Name(bokbok.RequestFromContext(ctx).Conn()), r.Key, r.Version)
		return storeOf(ctx).poll(ctx, r.Key, r.Version)
	})

	srv := &bokbok.Server{
		Config: bokbok.Config{
			Handler: bokbok.Chain(logRequests(conns), tenancy(stores))(mux),
			OnClose: conns.Closed,
			Logger:  slog.Default(),
		},
		OnOpen: conns.Opened,
	}
	if !keys.Insecure {
		srv.UserKey = keys.UserKey("./examples/kv/client", *addr, defaultAddr)
		srv.Realm = keys.Realm
	}
	ln, err := bokbok.Listen(*addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on %s (%s), tenants %s; Ctrl-C to stop", ln.Addr(), keys.Mode(), *tenants)
	// srv.Shutdown at Ctrl-C or SIGTERM: each connection's Draining
	// channel closes, which ends long polls and watches.
	if err := exampleutil.Serve(ctx, srv, ln, "shutting down: ending polls and watches, letting requests in flight finish"); err != nil {
		log.Fatal(err)
	}
	log.Printf("stopped")
}

// logRequests is a middleware that logs every request and notification:
// its connection, method, metadata, outcome and duration.
func logRequests(conns *exampleutil.ConnLog) bokbok.Middleware {
	return func(next bokbok.Handler) bokbok.Handler {
		return bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
			start := time.Now()
			reply, err := next.ServeBokbok(ctx, req)
			outcome := "ok"
			if err != nil {
				outcome = err.Error()
			}
			md := req.Metadata()
			log.Printf("%s: %s tenant=%q request-id=%q: %s (%v)", conns.Name(req.Conn()), req.Method(),
				md[kvapi.MDTenant], md[kvapi.MDRequestID], outcome, time.Since(start).Round(time.Microsecond))
			return reply, err
		})
	}
}

// tenantKey is the context key of the tenant's store.
type tenantKey struct{}

// tenancy is a middleware that refuses requests whose metadata names no
// tenant the server serves, and gives the handler the tenant's store
// (storeOf). A real server would also check that the connection's user
// (req.Conn().User()) may use the tenant.
func tenancy(stores map[string]*store) bokbok.Middleware {
	return func(next bokbok.Handler) bokbok.Handler {
		return bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
			tenant := req.Metadata()[kvapi.MDTenant]
			s, ok := stores[tenant]
			if !ok {
				return nil, bokbok.Errorf(kvapi.CodeForbidden, "no tenant %q here", tenant)
			}
			return next.ServeBokbok(context.WithValue(ctx, tenantKey{}, s), req)
		})
	}
}

// storeOf returns the store that tenancy chose for the request.
func storeOf(ctx context.Context) *store { return ctx.Value(tenantKey{}).(*store) }

// store is one tenant's keys.
type store struct {
	mu       sync.RWMutex
	entries  map[string]kvapi.Entry
	rev      uint64        // the last version given out
	changed  chan struct{} // closed and replaced at every change, to wake the polls
	watchers map[*watcher]bool
}

// watcher is a watch: the changes under prefix, for conn.
type watcher struct {
	prefix string
	conn   *bokbok.Conn
	ch     chan kvapi.Entry // closed if the client fell too far behind
}

func (s *store) get(key string) (kvapi.Entry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.entries[key]
	if !ok {
		return e, bokbok.Errorf(kvapi.CodeNotFound, "no key %q", key)
	}
	return e, nil
}

// write puts value under key, or with del deletes key, if key is at
// *ifVersion (when not nil), and tells the polls and watchers.
func (s *store) write(key, value string, ifVersion *uint64, del bool) (kvapi.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.entries[key] // Version 0 if none
	switch {
	case ifVersion != nil && *ifVersion != old.Version:
		return kvapi.Entry{}, bokbok.Errorf(kvapi.CodeConflict, "%q is at version %d, not %d", key, old.Version, *ifVersion)
	case del && old.Version == 0:
		return kvapi.Entry{}, bokbok.Errorf(kvapi.CodeNotFound, "no key %q", key)
	}
	e := kvapi.Entry{Key: key} // deleted: version 0
	if del {
		delete(s.entries, key)
	} else {
		s.rev++
		e = kvapi.Entry{Key: key, Value: value, Version: s.rev}
		s.entries[key] = e
	}
	close(s.changed)
	s.changed = make(chan struct{})
	for w := range s.watchers {
		if strings.HasPrefix(key, w.prefix) {
			select {
			case w.ch <- e:
			default: // too far behind: drop the watch
				close(w.ch)
				delete(s.watchers, w)
			}
		}
	}
	if del {
		return old, nil
	}
	return e, nil
}

// list returns the entries under prefix, by key. Given a connection, it
// also starts watching prefix for it, from the moment of the list.
func (s *store) list(prefix string, watch *bokbok.Conn) []kvapi.Entry {
	s.mu.Lock() // not RLock: a watch is added under the same lock as the list
	defer s.mu.Unlock()
	var out []kvapi.Entry
	for k, e := range s.entries {
		if strings.HasPrefix(k, prefix) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b kvapi.Entry) int { return strings.Compare(a.Key, b.Key) })
	if watch != nil {
		w := &watcher{prefix: prefix, conn: watch, ch: make(chan kvapi.Entry, 1000)}
		s.watchers[w] = true
		go s.notify(w)
	}
	return out
}

// notify calls the watching client back with each change, in order, until
// the connection starts shutting down.
func (s *store) notify(w *watcher) {
	defer func() {
		s.mu.Lock()
		delete(s.watchers, w)
		s.mu.Unlock()
	}()
	for {
		select {
		case e, ok := <-w.ch:
			if !ok {
				log.Printf("a watcher of %q fell too far behind; closing its connection", w.prefix)
				w.conn.Close()
				return
			}
			if err := w.conn.NotifyMethod(context.Background(), kvapi.Changed, e); err != nil {
				return
			}
		case <-w.conn.Draining():
			return
		}
	}
}

// poll waits until key's version is not version, and returns its entry:
// early, unchanged, if the connection starts shutting down.
func (s *store) poll(ctx context.Context, key string, version uint64) (kvapi.Entry, error) {
	draining := bokbok.RequestFromContext(ctx).Conn().Draining()
	for {
		s.mu.RLock()
		e, changed := s.entries[key], s.changed
		s.mu.RUnlock()
		e.Key = key
		if e.Version != version {
			return e, nil
		}
		select {
		case <-changed:
		case <-draining:
			return e, nil
		case <-ctx.Done():
			return kvapi.Entry{}, ctx.Err()
		}
	}
}
