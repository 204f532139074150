package main

import (
	"context"

	"github.com/bokbok-go/bokbok"
)

// bokbok-bulk is the bokbok system (insecure, default settings) with
// bulkMsg as request and reply: Msg with Data as a bokbok.Bulk, which is
// the same on the wire, but decoded it refers to the received message
// instead of a copy (the zero-copy path for large binary fields). The
// server's Handler decodes the request into a bulkMsg and returns it; the
// client calls conn.Call(ctx, req, &resp) with bulkMsg values.
type bokbokBulkSystem struct{ *bokbokSystem }

// newBokbokBulkSystem returns the system; it is always insecure.
func newBokbokBulkSystem() *bokbokBulkSystem {
	return &bokbokBulkSystem{&bokbokSystem{}}
}

func (s *bokbokBulkSystem) name() string { return "bokbok-bulk" }

// bokbokBulkEcho decodes the request into a bulkMsg and returns it.
var bokbokBulkEcho = bokbok.HandlerFunc(func(ctx context.Context, r *bokbok.Request) (any, error) {
	var m bulkMsg
	if err := r.Decode(&m); err != nil {
		return nil, err
	}
	return &m, nil
})

func (s *bokbokBulkSystem) start() (string, func(), error) { return s.serve(bokbokBulkEcho) }

// bokbokBulkClient converts the harness's Msg to and from bulkMsg around
// each call; Data is shared, not copied.
type bokbokBulkClient struct{ c *bokbok.Conn }

// dial connects with a nil Config, as bokbok does.
func (s *bokbokBulkSystem) dial(ctx context.Context, addr string) (client, error) {
	c, err := s.connect(ctx, addr, nil)
	if err != nil {
		return nil, err
	}
	return bokbokBulkClient{c}, nil
}

// bulkCall is one call's values in one allocation, as bokbok's client
// allocates only its reply: the request and reply as bulkMsg, and the
// reply as the harness's Msg.
type bulkCall struct {
	req, reply bulkMsg
	out        Msg
}

// call echoes req through bulkMsg values.
func (c bokbokBulkClient) call(ctx context.Context, req *Msg) (*Msg, error) {
	x := &bulkCall{req: bulkMsg{Seq: req.Seq, Data: req.Data}}
	if err := c.c.Call(ctx, &x.req, &x.reply); err != nil {
		return nil, err
	}
	x.out = Msg{Seq: x.reply.Seq, Data: x.reply.Data}
	return &x.out, nil
}

// close closes the connection.
func (c bokbokBulkClient) close() error { return c.c.Close() }

// bulkMsg is Msg with Data as a bokbok.Bulk.
type bulkMsg struct {
	Seq  int64       `msgpack:"seq"`
	Data bokbok.Bulk `msgpack:"data"`
}
