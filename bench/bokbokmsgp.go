package main

import (
	"context"

	"github.com/bokbok-go/bokbok"
)

// bokbok-msgp is the bokbok system (insecure, default settings) with
// msgpMsg, whose MessagePack methods tinylib/msgp generated, as request
// and reply: the server's Handler decodes the request into a msgpMsg and
// returns it, the client calls conn.Call(ctx, req, &resp) with msgpMsg
// values. The library encodes and decodes a type with msgp's MarshalMsg
// and UnmarshalMsg through those methods where it supports them, and
// through reflection (the msgpack tags) where it does not; the echo is
// the same either way.
type bokbokMsgpSystem struct{ *bokbokSystem }

// newBokbokMsgpSystem returns the system; it is always insecure.
func newBokbokMsgpSystem() *bokbokMsgpSystem {
	return &bokbokMsgpSystem{&bokbokSystem{}}
}

func (s *bokbokMsgpSystem) name() string { return "bokbok-msgp" }

// bokbokMsgpEcho decodes the request into a msgpMsg and returns it.
var bokbokMsgpEcho = bokbok.HandlerFunc(func(ctx context.Context, r *bokbok.Request) (any, error) {
	var m msgpMsg
	if err := r.Decode(&m); err != nil {
		return nil, err
	}
	return &m, nil
})

func (s *bokbokMsgpSystem) start() (string, func(), error) { return s.serve(bokbokMsgpEcho) }

// bokbokMsgpClient converts the harness's Msg to and from msgpMsg around
// each call; Data is shared, not copied.
type bokbokMsgpClient struct{ c *bokbok.Conn }

// dial connects with a nil Config, as bokbok does.
func (s *bokbokMsgpSystem) dial(ctx context.Context, addr string) (client, error) {
	c, err := s.connect(ctx, addr, nil)
	if err != nil {
		return nil, err
	}
	return bokbokMsgpClient{c}, nil
}

// msgpCall is one call's values in one allocation, as bokbok's client
// allocates only its reply: the request and reply as msgpMsg, and the
// reply as the harness's Msg.
type msgpCall struct {
	req, reply msgpMsg
	out        Msg
}

// call echoes req through msgpMsg values.
func (c bokbokMsgpClient) call(ctx context.Context, req *Msg) (*Msg, error) {
	x := &msgpCall{req: msgpMsg{Seq: req.Seq, Data: req.Data}}
	if err := c.c.Call(ctx, &x.req, &x.reply); err != nil {
		return nil, err
	}
	x.out = Msg{Seq: x.reply.Seq, Data: x.reply.Data}
	return &x.out, nil
}

// close closes the connection.
func (c bokbokMsgpClient) close() error { return c.c.Close() }
