package main

import (
	"context"
	"errors"
	"net"
	"sync"
)

// rawClient multiplexes calls over one rawConn.
type rawClient struct {
	*rawConn
	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan *Msg
	wg      sync.WaitGroup
}

// dialRaw connects to a raw server at addr and starts the reader.
func dialRaw(ctx context.Context, addr string, tr transport) (*rawClient, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &rawClient{rawConn: newRawConn(nc, tr), pending: make(map[uint64]chan *Msg)}
	c.wg.Add(1)
	go func() { defer c.wg.Done(); c.readLoop() }()
	return c, nil
}

// call sends req under a new id and waits for its reply. If ctx ends
// first, a Data over rawCopyMax may still be written after call returns.
func (c *rawClient) call(ctx context.Context, req *Msg) (*Msg, error) {
	ch := make(chan *Msg, 1)
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	if err := c.send(id, req); err != nil {
		c.forget(id)
		return nil, err
	}
	select {
	case m := <-ch:
		return m, nil
	case <-c.done:
		c.forget(id)
		return nil, c.closedErr()
	case <-ctx.Done():
		c.forget(id)
		return nil, ctx.Err()
	}
}

// forget drops the pending call id.
func (c *rawClient) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// readLoop hands every reply to the call waiting for it.
func (c *rawClient) readLoop() {
	for {
		id, m, err := c.readFrame()
		if err != nil {
			c.fail(err)
			return
		}
		c.mu.Lock()
		ch := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
}

// close fails the connection and waits for the reader.
func (c *rawClient) close() error {
	c.fail(errors.New("closed by client"))
	c.wg.Wait()
	return nil
}
