package main

import (
	"context"

	"github.com/bokbok-go/bokbok"
)

// bokbok-mux is the echo of the bokbok system through the method-routing
// API: the server registers a typed handler for "echo" on a bokbok.Mux,
// the client makes a typed call, bokbok.Invoke[Msg](ctx, conn, "echo",
// req). The payload is the same Msg (msgpack tags) that bokbok sends.
//
// Not bare, the Mux is wrapped in bokbok.Chain of two pass-through
// middlewares and the client's Config has two pass-through interceptors:
// each wraps and calls the next step, as a real one would, doing nothing
// else. Bare, there are neither, which isolates the cost of routing, the
// method name on the wire and the typed calls.
type bokbokMuxSystem struct {
	*bokbokSystem      // secure or not, and the key
	bare          bool // no interceptors and no middleware
}

func newBokbokMuxSystem(secure, bare bool) (*bokbokMuxSystem, error) {
	b, err := newBokbokSystem(secure)
	if err != nil {
		return nil, err
	}
	return &bokbokMuxSystem{bokbokSystem: b, bare: bare}, nil
}

func (s *bokbokMuxSystem) name() string {
	n := "bokbok-mux"
	if s.secure {
		n += "-secure"
	}
	if s.bare {
		n += "-bare"
	}
	return n
}

const bokbokMuxMethod = "echo"

// passMiddleware and passInterceptor do nothing but call the next step.
func passMiddleware(h bokbok.Handler) bokbok.Handler {
	return bokbok.HandlerFunc(func(ctx context.Context, r *bokbok.Request) (any, error) {
		return h.ServeBokbok(ctx, r)
	})
}

func passInterceptor(ctx context.Context, o *bokbok.Outgoing, next bokbok.CallFunc) error {
	return next(ctx, o)
}

func (s *bokbokMuxSystem) start() (string, func(), error) {
	mux := bokbok.NewMux()
	bokbok.Handle(mux, bokbokMuxMethod, func(ctx context.Context, req Msg) (Msg, error) {
		return req, nil
	})
	var h bokbok.Handler = mux
	if !s.bare {
		h = bokbok.Chain(passMiddleware, passMiddleware)(mux)
	}
	return s.serve(h)
}

type bokbokMuxClient struct{ c *bokbok.Conn }

func (s *bokbokMuxSystem) dial(ctx context.Context, addr string) (client, error) {
	var ics []bokbok.Interceptor
	if !s.bare {
		ics = []bokbok.Interceptor{passInterceptor, passInterceptor}
	}
	c, err := s.connect(ctx, addr, ics)
	if err != nil {
		return nil, err
	}
	return bokbokMuxClient{c}, nil
}

func (c bokbokMuxClient) call(ctx context.Context, req *Msg) (*Msg, error) {
	reply, err := bokbok.Invoke[Msg](ctx, c.c, bokbokMuxMethod, req)
	if err != nil {
		return nil, err
	}
	return &reply, nil
}

func (c bokbokMuxClient) close() error { return c.c.Close() }
