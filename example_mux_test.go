package bokbok_test

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/bokbok-go/bokbok"
)

// exampleMuxServe serves h on a loopback port and returns a connection to
// it, and a function that shuts both down.
func exampleMuxServe(ctx context.Context, h bokbok.Handler) (*bokbok.Conn, func()) {
	srv := &bokbok.Server{Config: bokbok.Config{Handler: h}}
	ln, err := bokbok.Listen("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	conn, err := bokbok.Dial(ctx, ln.Addr().String(), nil)
	if err != nil {
		panic(err)
	}
	return conn, func() {
		conn.Shutdown(ctx)
		srv.Shutdown(ctx)
		if err := <-served; !errors.Is(err, bokbok.ErrServerClosed) {
			panic(err)
		}
	}
}

// A Mux routes requests by their method name; "" is the route for
// messages sent without one.
func ExampleMux() {
	ctx := context.Background()

	mux := bokbok.NewMux()
	mux.HandleFunc("upper", func(ctx context.Context, req *bokbok.Request) (any, error) {
		var s string
		if err := req.Decode(&s); err != nil {
			return nil, err
		}
		return strings.ToUpper(s), nil
	})
	mux.HandleFunc("len", func(ctx context.Context, req *bokbok.Request) (any, error) {
		var s string
		if err := req.Decode(&s); err != nil {
			return nil, err
		}
		return len(s), nil
	})
	mux.HandleFunc("", func(ctx context.Context, req *bokbok.Request) (any, error) {
		return "no method named", nil
	})
	fmt.Println("methods:", mux.Methods())

	conn, shutdown := exampleMuxServe(ctx, mux)
	defer shutdown()

	var upper string
	if err := conn.Invoke(ctx, "upper", "bokbok", &upper); err != nil {
		panic(err)
	}
	var n int
	if err := conn.Invoke(ctx, "len", "bokbok", &n); err != nil {
		panic(err)
	}
	var plain string
	if err := conn.Call(ctx, "bokbok", &plain); err != nil {
		panic(err)
	}
	fmt.Println(upper, n, plain)

	err := conn.Invoke(ctx, "lower", "BOKBOK", nil)
	fmt.Println(errors.Is(err, bokbok.ErrNoMethod), err)
	// Output:
	// methods: [ len upper]
	// BOKBOK 6 no method named
	// true bokbok: remote error [bokbok.no_method]: no method "lower"
}

// Handle registers a handler that takes its request, and returns its
// reply, as Go values. A request that does not decode into the request
// type is refused, naming the field, before the handler runs.
func ExampleHandle() {
	ctx := context.Background()

	type SumRequest struct {
		Numbers []int `msgpack:"numbers"`
	}
	type SumReply struct {
		Total int `msgpack:"total"`
	}
	mux := bokbok.NewMux()
	bokbok.Handle(mux, "math.sum", func(ctx context.Context, req SumRequest) (SumReply, error) {
		var r SumReply
		for _, n := range req.Numbers {
			r.Total += n
		}
		return r, nil
	})

	conn, shutdown := exampleMuxServe(ctx, mux)
	defer shutdown()

	var reply SumReply
	if err := conn.Invoke(ctx, "math.sum", SumRequest{Numbers: []int{1, 2, 3}}, &reply); err != nil {
		panic(err)
	}
	fmt.Println("total:", reply.Total)

	for _, bad := range []any{
		map[string]any{"numbers": []any{1, "two"}},
		map[string]any{"numbrs": []int{1}},
	} {
		err := conn.Invoke(ctx, "math.sum", bad, &reply)
		fmt.Println(errors.Is(err, bokbok.ErrBadRequest), err)
	}
	// Output:
	// total: 6
	// true bokbok: remote error [bokbok.bad_request]: math.sum: request field "numbers[1]": cannot decode a msgpack string into int
	// true bokbok: remote error [bokbok.bad_request]: math.sum: request has unknown field "numbrs"
}

// Invoke calls a method and returns its reply as a Go value of the type
// given.
func ExampleInvoke() {
	ctx := context.Background()

	type Point struct {
		X int `msgpack:"x"`
		Y int `msgpack:"y"`
	}
	mux := bokbok.NewMux()
	bokbok.Handle(mux, "geo.mirror", func(ctx context.Context, p Point) (Point, error) {
		return Point{X: p.Y, Y: p.X}, nil
	})
	bokbok.Handle(mux, "geo.norm1", func(ctx context.Context, p Point) (int, error) {
		return max(p.X, -p.X) + max(p.Y, -p.Y), nil
	})

	conn, shutdown := exampleMuxServe(ctx, mux)
	defer shutdown()

	p, err := bokbok.Invoke[Point](ctx, conn, "geo.mirror", Point{X: 1, Y: -2})
	if err != nil {
		panic(err)
	}
	fmt.Printf("%+v\n", p)
	n, err := bokbok.Invoke[int](ctx, conn, "geo.norm1", p)
	if err != nil {
		panic(err)
	}
	fmt.Println(n)
	_, err = bokbok.Invoke[int](ctx, conn, "geo.norm2", p)
	fmt.Println(errors.Is(err, bokbok.ErrNoMethod))
	// Output:
	// {X:-2 Y:1}
	// 3
	// true
}

// One Method declaration names a method with its request and reply types,
// for the side that serves it and the side that calls it.
func ExampleMethod() {
	ctx := context.Background()

	type GetRequest struct {
		Key string `msgpack:"key"`
	}
	type GetReply struct {
		Value string `msgpack:"value"`
		Found bool   `msgpack:"found"`
	}
	var KVGet = bokbok.Method[GetRequest, GetReply]("kv.get")

	// The server.
	store := map[string]string{"greeting": "hello"}
	mux := bokbok.NewMux()
	KVGet.Handle(mux, func(ctx context.Context, req GetRequest) (GetReply, error) {
		v, ok := store[req.Key]
		return GetReply{Value: v, Found: ok}, nil
	})

	conn, shutdown := exampleMuxServe(ctx, mux)
	defer shutdown()

	// The client.
	for _, key := range []string{"greeting", "farewell"} {
		reply, err := KVGet.Call(ctx, conn, GetRequest{Key: key})
		if err != nil {
			panic(err)
		}
		fmt.Printf("%s: %+v\n", key, reply)
	}
	// Output:
	// greeting: {Value:hello Found:true}
	// farewell: {Value: Found:false}
}
