package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// raw is the floor for framed RPC over one TCP connection: a minimal
// length-prefixed echo with a pending map (request id → channel) on the
// client, one reader goroutine per side, and a writer goroutine per side
// that drains a queue into a buffered writer and flushes when the queue is
// empty, so concurrent calls share writes. The server runs each request on
// its own goroutine.
//
// A frame is [4-byte length][8-byte id][8-byte Seq][Data], all big-endian;
// the length counts everything after itself.
type rawSystem struct{}

func (rawSystem) name() string { return "raw" }

func (rawSystem) start() (string, func(), error) { return startRawServer(plainTransport) }

func (rawSystem) dial(ctx context.Context, addr string) (client, error) {
	return dialRaw(ctx, addr, plainTransport)
}

// A transport wraps a network connection into the byte streams frames are
// read from and written to.
type transport func(nc net.Conn) (io.Reader, flushWriter)

// flushWriter is a buffered writer: Flush sends what Write buffered.
type flushWriter interface {
	io.Writer
	Flush() error
}

// plainTransport is raw's: bufio with its default 4 KiB buffers.
func plainTransport(nc net.Conn) (io.Reader, flushWriter) {
	return bufio.NewReader(nc), bufio.NewWriter(nc)
}

const (
	rawHeaderSize = 4 + 8 + seqSize
	rawMaxFrame   = 64 << 20 // refuse absurd lengths instead of allocating them
	rawQueueLen   = 128      // frames waiting for the writer; more callers wait to queue
)

// outFrame is a frame waiting for the writer.
type outFrame struct {
	id uint64
	m  *Msg
}

// rawConn is one end of a raw connection: the parts client and server
// share.
type rawConn struct {
	nc    net.Conn
	r     io.Reader
	w     flushWriter
	sendq chan outFrame

	done     chan struct{} // closed by fail
	failOnce sync.Once
	err      error // why the connection failed; set before done closes

	rhdr [rawHeaderSize]byte // the reader's header buffer
	whdr [rawHeaderSize]byte // the writer's header buffer
}

func newRawConn(nc net.Conn, tr transport) *rawConn {
	r, w := tr(nc)
	return &rawConn{nc: nc, r: r, w: w, sendq: make(chan outFrame, rawQueueLen), done: make(chan struct{})}
}

// fail closes the connection, once, recording why.
func (c *rawConn) fail(err error) {
	c.failOnce.Do(func() {
		c.err = err
		close(c.done)
		c.nc.Close()
	})
}

// send queues a frame for the writer.
func (c *rawConn) send(ctx context.Context, f outFrame) error {
	select {
	case c.sendq <- f:
		return nil
	case <-c.done:
		return fmt.Errorf("connection closed: %w", c.err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writeLoop writes queued frames, flushing whenever the queue is empty.
func (c *rawConn) writeLoop() {
	for {
		select {
		case f := <-c.sendq:
			if err := c.writeFrame(f); err != nil {
				c.fail(err)
				return
			}
			if len(c.sendq) == 0 {
				if err := c.w.Flush(); err != nil {
					c.fail(err)
					return
				}
			}
		case <-c.done:
			return
		}
	}
}

func (c *rawConn) writeFrame(f outFrame) error {
	binary.BigEndian.PutUint32(c.whdr[0:4], uint32(8+seqSize+len(f.m.Data)))
	binary.BigEndian.PutUint64(c.whdr[4:12], f.id)
	binary.BigEndian.PutUint64(c.whdr[12:20], uint64(f.m.Seq))
	if _, err := c.w.Write(c.whdr[:]); err != nil {
		return err
	}
	_, err := c.w.Write(f.m.Data)
	return err
}

// readFrame reads the next frame; its Data is freshly allocated.
func (c *rawConn) readFrame() (uint64, *Msg, error) {
	if _, err := io.ReadFull(c.r, c.rhdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(c.rhdr[0:4])
	if n < 8+seqSize || n > rawMaxFrame {
		return 0, nil, fmt.Errorf("raw: bad frame length %d", n)
	}
	id := binary.BigEndian.Uint64(c.rhdr[4:12])
	m := &Msg{Seq: int64(binary.BigEndian.Uint64(c.rhdr[12:20])), Data: make([]byte, n-8-seqSize)}
	if _, err := io.ReadFull(c.r, m.Data); err != nil {
		return 0, nil, err
	}
	return id, m, nil
}

// rawClient multiplexes calls over one rawConn.
type rawClient struct {
	*rawConn
	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan *Msg
	wg      sync.WaitGroup
}

func dialRaw(ctx context.Context, addr string, tr transport) (*rawClient, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &rawClient{rawConn: newRawConn(nc, tr), pending: make(map[uint64]chan *Msg)}
	c.wg.Add(2)
	go func() { defer c.wg.Done(); c.writeLoop() }()
	go func() { defer c.wg.Done(); c.readLoop() }()
	return c, nil
}

func (c *rawClient) call(ctx context.Context, req *Msg) (*Msg, error) {
	ch := make(chan *Msg, 1)
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	if err := c.send(ctx, outFrame{id, req}); err != nil {
		c.forget(id)
		return nil, err
	}
	select {
	case m := <-ch:
		return m, nil
	case <-c.done:
		c.forget(id)
		return nil, fmt.Errorf("connection closed: %w", c.err)
	case <-ctx.Done():
		c.forget(id)
		return nil, ctx.Err()
	}
}

func (c *rawClient) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

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

func (c *rawClient) close() error {
	c.fail(errors.New("closed by client"))
	c.wg.Wait()
	return nil
}

// rawServer accepts raw connections and echoes every request.
type rawServer struct {
	ln     net.Listener
	tr     transport
	mu     sync.Mutex
	conns  map[*rawConn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func startRawServer(tr transport) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	s := &rawServer{ln: ln, tr: tr, conns: make(map[*rawConn]struct{})}
	s.wg.Add(1)
	go s.acceptLoop()
	return ln.Addr().String(), s.stop, nil
}

func (s *rawServer) acceptLoop() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		c := newRawConn(nc, s.tr)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(2)
		go func() { defer s.wg.Done(); c.writeLoop() }()
		go func() { defer s.wg.Done(); s.serve(c) }()
	}
}

// serve reads requests and answers each on its own goroutine.
func (s *rawServer) serve(c *rawConn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	for {
		id, m, err := c.readFrame()
		if err != nil {
			c.fail(err)
			return
		}
		go func() {
			reply := &Msg{Seq: m.Seq, Data: m.Data} // the echo "handler"
			c.send(context.Background(), outFrame{id, reply})
		}()
	}
}

func (s *rawServer) stop() {
	s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.fail(errors.New("server stopped"))
	}
	s.mu.Unlock()
	s.wg.Wait()
}
