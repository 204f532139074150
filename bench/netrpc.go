package main

import (
	"context"
	"net"
	"net/rpc"
	"sync"
)

// netrpc is Go's net/rpc with its default gob codec over TCP, serving an
// Echo service.
type netrpcSystem struct{}

// EchoService is the net/rpc service; net/rpc needs it exported.
type EchoService struct{}

// Echo replies with the request.
func (EchoService) Echo(req *Msg, reply *Msg) error {
	*reply = *req
	return nil
}

func (netrpcSystem) name() string { return "netrpc" }

func (netrpcSystem) start() (string, func(), error) {
	srv := rpc.NewServer()
	if err := srv.RegisterName("Echo", EchoService{}); err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	var (
		mu     sync.Mutex
		conns  = make(map[net.Conn]struct{})
		closed bool
		wg     sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				nc.Close()
				return
			}
			conns[nc] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				srv.ServeConn(nc) // returns when the connection closes
				mu.Lock()
				delete(conns, nc)
				mu.Unlock()
			}()
		}
	}()
	stop := func() {
		ln.Close()
		mu.Lock()
		closed = true
		for nc := range conns {
			nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
	return ln.Addr().String(), stop, nil
}

type netrpcClient struct{ c *rpc.Client }

func (netrpcSystem) dial(ctx context.Context, addr string) (client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return netrpcClient{rpc.NewClient(nc)}, nil
}

func (c netrpcClient) call(ctx context.Context, req *Msg) (*Msg, error) {
	reply := new(Msg)
	call := c.c.Go("Echo.Echo", req, reply, make(chan *rpc.Call, 1))
	select {
	case <-call.Done:
		if call.Error != nil {
			return nil, call.Error
		}
		return reply, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c netrpcClient) close() error { return c.c.Close() }
