package bokbok_test

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/bokbok-go/bokbok"
)

// Metadata travels beside a request and its reply: the handler reads the
// caller's, and answers with its own.
func ExampleWithMetadata() {
	ctx := context.Background()
	mux := bokbok.NewMux()
	bokbok.Handle(mux, "whoami", func(ctx context.Context, _ struct{}) (string, error) {
		req := bokbok.RequestFromContext(ctx)
		req.SetReplyMetadata(bokbok.Metadata{"served-by": "example"})
		return "tenant " + req.Metadata()["tenant"], nil
	})
	conn, shutdown := exampleMuxServe(ctx, mux)
	defer shutdown()

	callCtx := bokbok.WithMetadata(ctx, bokbok.Metadata{"tenant": "t1"})
	resp, err := conn.RequestMethod(callCtx, "whoami", struct{}{})
	if err != nil {
		fmt.Println(err)
		return
	}
	var who string
	if err := resp.Decode(&who); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(who, "- served by", resp.Metadata()["served-by"])
	// Output: tenant t1 - served by example
}

// Client interceptors see every call a connection makes: here one adds a
// token to each call's metadata, and one records the method, the size
// sent and the outcome.
func ExampleInterceptor() {
	ctx := context.Background()
	mux := bokbok.NewMux()
	bokbok.Handle(mux, "secret", func(ctx context.Context, _ struct{}) (string, error) {
		if bokbok.RequestFromContext(ctx).Metadata()["token"] != "s3cret" {
			return "", bokbok.Errorf("auth.denied", "bad token")
		}
		return "the answer is 42", nil
	})
	srv := &bokbok.Server{Config: bokbok.Config{Handler: mux}}
	ln, err := bokbok.Listen("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(ctx)

	withToken := func(ctx context.Context, o *bokbok.Outgoing, next bokbok.CallFunc) error {
		o.SetMetadata("token", "s3cret")
		return next(ctx, o)
	}
	var log []string
	var mu sync.Mutex
	record := func(ctx context.Context, o *bokbok.Outgoing, next bokbok.CallFunc) error {
		err := next(ctx, o)
		mu.Lock()
		log = append(log, fmt.Sprintf("%s: sent %v bytes, error %v", o.Method(), o.RequestSize() > 0, err))
		mu.Unlock()
		return err
	}
	conn, err := bokbok.Dial(ctx, ln.Addr().String(), &bokbok.Config{
		Interceptors: []bokbok.Interceptor{record, withToken},
	})
	if err != nil {
		panic(err)
	}
	defer conn.Close()

	answer, err := bokbok.Invoke[string](ctx, conn, "secret", struct{}{})
	fmt.Println(answer, err)
	_, err = bokbok.Invoke[string](ctx, conn, "public", struct{}{})
	fmt.Println(errors.Is(err, bokbok.ErrNoMethod))
	mu.Lock()
	for _, l := range log {
		fmt.Println(l)
	}
	mu.Unlock()
	// Output:
	// the answer is 42 <nil>
	// true
	// secret: sent true bytes, error <nil>
	// public: sent true bytes, error bokbok: remote error [bokbok.no_method]: no method "public"
}

// Middleware wraps a server's Handler: here an authentication check that
// reads the metadata without decoding the request, and a counter of
// calls per method, composed with Chain.
func ExampleChain() {
	ctx := context.Background()
	var (
		mu    sync.Mutex
		calls = map[string]int{}
	)
	count := func(next bokbok.Handler) bokbok.Handler {
		return bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
			mu.Lock()
			calls[req.Method()]++
			mu.Unlock()
			return next.ServeBokbok(ctx, req)
		})
	}
	auth := func(next bokbok.Handler) bokbok.Handler {
		return bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
			if req.Metadata()["token"] != "s3cret" {
				return nil, bokbok.Errorf("auth.denied", "bad token")
			}
			return next.ServeBokbok(ctx, req)
		})
	}
	mux := bokbok.NewMux()
	bokbok.Handle(mux, "double", func(ctx context.Context, n int) (int, error) { return 2 * n, nil })
	conn, shutdown := exampleMuxServe(ctx, bokbok.Chain(count, auth)(mux))
	defer shutdown()

	_, err := bokbok.Invoke[int](ctx, conn, "double", 21)
	fmt.Println(err)
	n, err := bokbok.Invoke[int](bokbok.WithMetadata(ctx, bokbok.Metadata{"token": "s3cret"}), conn, "double", 21)
	fmt.Println(n, err)
	mu.Lock()
	fmt.Println("calls of double:", calls["double"])
	mu.Unlock()
	// Output:
	// bokbok: remote error [auth.denied]: bad token
	// 42 <nil>
	// calls of double: 2
}

// callCounter is a StatsHandler that counts calls served by method.
type callCounter struct {
	mu     sync.Mutex
	served map[string]int
	bytes  int
}

func (c *callCounter) HandleCall(st bokbok.CallStats) {
	if !st.Served {
		return
	}
	c.mu.Lock()
	c.served[st.Method]++
	c.bytes += st.RequestBytes
	c.mu.Unlock()
}

func (c *callCounter) HandleConn(bokbok.ConnStats) {}

// A StatsHandler on Config.Stats sees every call sent and served.
func ExampleStatsHandler() {
	ctx := context.Background()
	stats := &callCounter{served: map[string]int{}}
	mux := bokbok.NewMux()
	bokbok.Handle(mux, "double", func(ctx context.Context, n int) (int, error) { return 2 * n, nil })
	srv := &bokbok.Server{Config: bokbok.Config{Handler: mux, Stats: stats}}
	ln, err := bokbok.Listen("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(ln)
	conn, err := bokbok.Dial(ctx, ln.Addr().String(), nil)
	if err != nil {
		panic(err)
	}
	for i := range 3 {
		if _, err := bokbok.Invoke[int](ctx, conn, "double", i); err != nil {
			panic(err)
		}
	}
	conn.Shutdown(ctx)
	srv.Shutdown(ctx) // the server's stats for a call are in once its reply is queued
	stats.mu.Lock()
	fmt.Println("double served", stats.served["double"], "times;", stats.bytes > 0)
	stats.mu.Unlock()
	// Output: double served 3 times; true
}
