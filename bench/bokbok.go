package main

import (
	"context"
	"net"

	"github.com/bokbok-go/bokbok"
)

// bokbok is the library under test with default settings: insecure, or
// secure with a generated pre-shared key. The server's Handler decodes
// the request into a Msg (msgpack) and returns it.
type bokbokSystem struct {
	secure bool
	key    bokbok.Key // secure only
	rcvbuf int        // Config.SocketReceiveBuffer of both ends (bokbok-rcvbuf), or 0
}

const bokbokUser, bokbokRealm = "bench", "bench"

func newBokbokSystem(secure bool) (*bokbokSystem, error) {
	s := &bokbokSystem{secure: secure}
	if secure {
		var err error
		if s.key, err = bokbok.GenerateKey(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *bokbokSystem) name() string {
	if s.rcvbuf > 0 {
		return "bokbok-rcvbuf"
	}
	if s.secure {
		return "bokbok-secure"
	}
	return "bokbok"
}

var bokbokEcho = bokbok.HandlerFunc(func(ctx context.Context, r *bokbok.Request) (any, error) {
	var m Msg
	if err := r.Decode(&m); err != nil {
		return nil, err
	}
	return &m, nil
})

func (s *bokbokSystem) start() (string, func(), error) { return s.serve(bokbokEcho) }

// serve starts a bokbok.Server with handler h (and the system's key, if
// secure) on 127.0.0.1; see system.start.
func (s *bokbokSystem) serve(h bokbok.Handler) (string, func(), error) {
	srv := &bokbok.Server{Config: bokbok.Config{Handler: h, SocketReceiveBuffer: s.rcvbuf}}
	if s.secure {
		srv.Realm = bokbokRealm
		srv.UserKey = func(user string) (bokbok.Key, bool) { return s.key, user == bokbokUser }
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go srv.Serve(ln)
	stop := func() {
		srv.Close()
		srv.Wait()
	}
	return ln.Addr().String(), stop, nil
}

type bokbokClient struct{ c *bokbok.Conn }

func (s *bokbokSystem) dial(ctx context.Context, addr string) (client, error) {
	c, err := s.connect(ctx, addr, nil)
	if err != nil {
		return nil, err
	}
	return bokbokClient{c}, nil
}

// connect dials addr with the system's key, if secure, and the given
// client interceptors (none: a nil Config when insecure, as a user would
// dial).
func (s *bokbokSystem) connect(ctx context.Context, addr string, ics []bokbok.Interceptor) (*bokbok.Conn, error) {
	var cfg *bokbok.Config
	if s.secure || len(ics) > 0 || s.rcvbuf > 0 {
		cfg = &bokbok.Config{Interceptors: ics, SocketReceiveBuffer: s.rcvbuf}
	}
	if s.secure {
		cfg.Key, cfg.User, cfg.Realm = &s.key, bokbokUser, bokbokRealm
	}
	return bokbok.Dial(ctx, addr, cfg)
}

func (c bokbokClient) call(ctx context.Context, req *Msg) (*Msg, error) {
	reply := new(Msg)
	if err := c.c.Call(ctx, req, reply); err != nil {
		return nil, err
	}
	return reply, nil
}

func (c bokbokClient) close() error { return c.c.Close() }
