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
// flags of examples/server (-insecure, -user, -key-file), and stops
// gracefully on Ctrl-C or SIGTERM, ending long polls and watches early.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/examples/kv/kvapi"
)

func main() {
	addr := flag.String("addr", "localhost:7071", `address to listen on: "host:port", or a Unix socket path such as "./kv.sock"`)
	tenants := flag.String("tenants", "default", "the tenants served, separated by commas; each has a store of its own")
	insecure := flag.Bool("insecure", false, "accept insecure clients only: no keys, nothing encrypted")
	user := flag.String("user", "demo", "the user name clients authenticate as")
	keyFile := flag.String("key-file", "", "a file holding the user's key in its text form; without it, a new key is generated and printed")
	verbose := flag.Bool("v", false, "log the library's debug records too")
	flag.Parse()
	log.SetFlags(log.Ltime)
	log.SetPrefix("kv-server: ")
	if *verbose {
		slog.SetLogLoggerLevel(slog.LevelDebug)
	}

	stores := map[string]*store{}
	for _, t := range strings.Split(*tenants, ",") {
		stores[t] = newStore()
	}
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
		log.Printf("kv.poll %q: waiting for a version other than %d", r.Key, r.Version)
		return storeOf(ctx).poll(ctx, r.Key, r.Version)
	})

	srv := &bokbok.Server{Config: bokbok.Config{
		Handler: bokbok.Chain(logRequests, tenancy(stores))(mux),
		Logger:  slog.Default(),
	}}
	mode := "insecure"
	if !*insecure {
		// One user, as in examples/server, with the key of -key-file or
		// a new one.
		var key bokbok.Key
		var err error
		if *keyFile != "" {
			key, err = bokbok.ReadKeyFile(*keyFile)
		} else if key, err = bokbok.GenerateKey(); err == nil {
			text, _ := key.MarshalText()
			log.Printf("no -key-file given: generated a key for user %q; list the keys with:", *user)
			log.Printf("    go run ./examples/kv/client -addr %s -user %s -key %s", *addr, *user, text)
		}
		if err != nil {
			log.Fatal(err)
		}
		srv.UserKey = func(name string) (bokbok.Key, bool) { return key, name == *user }
		srv.Realm = kvapi.Realm
		mode = fmt.Sprintf("secure: user %q", *user)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// At Ctrl-C or SIGTERM, Run shuts the server down: each connection's
	// Draining channel closes, which ends long polls and watches.
	context.AfterFunc(ctx, func() {
		stop() // a second Ctrl-C kills the server at once
		log.Print("shutting down: ending polls and watches, letting requests in flight finish")
	})
	ln, err := bokbok.Listen(*addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on %s (%s), tenants %s; Ctrl-C to stop", ln.Addr(), mode, *tenants)
	if err := srv.Run(ctx, ln, 10*time.Second); err != nil {
		log.Fatal(err)
	}
	log.Print("stopped")
}

// logRequests is a middleware that logs every request and notification:
// its method, user, metadata, outcome and duration.
func logRequests(next bokbok.Handler) bokbok.Handler {
	return bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
		start := time.Now()
		reply, err := next.ServeBokbok(ctx, req)
		outcome := "ok"
		if err != nil {
			outcome = err.Error()
		}
		md := req.Metadata()
		log.Printf("%s user=%q tenant=%q request-id=%q: %s (%v)", req.Method(), req.Conn().User(),
			md[kvapi.MDTenant], md[kvapi.MDRequestID], outcome, time.Since(start).Round(time.Microsecond))
		return reply, err
	})
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
