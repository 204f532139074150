package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
)

// raw is the floor for framed RPC over one TCP connection: a minimal
// length-prefixed echo with a pending map (request id → channel) on the
// client, one reader goroutine per end reading through a 4 KiB
// bufio.Reader, and writes coalesced under a mutex by whichever sender
// finds nobody else writing (rawwrite.go): no writer goroutine, no send
// queue, no write buffer held while idle. The server runs each request on
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

// A transport wraps a network connection into the byte stream frames are
// read from and the writer that batches of whole frames are written with.
type transport func(nc net.Conn) (io.Reader, batchWriter)

// A batchWriter writes a batch of whole frames, in order. Only the
// connection's current flusher calls it, so it needs no lock of its own;
// it may consume b (as net.Buffers.WriteTo does).
type batchWriter interface {
	writeBatch(b net.Buffers) error
}

// plainTransport is raw's: a bufio.Reader with its default 4 KiB buffer,
// and batches written straight to the connection.
func plainTransport(nc net.Conn) (io.Reader, batchWriter) {
	return bufio.NewReader(nc), plainWriter{nc}
}

// plainWriter writes a batch with one system call: write for one piece,
// writev for several.
type plainWriter struct{ nc net.Conn }

// writeBatch writes b with one system call.
func (w plainWriter) writeBatch(b net.Buffers) error {
	if len(b) == 1 {
		_, err := w.nc.Write(b[0])
		return err
	}
	_, err := b.WriteTo(w.nc)
	return err
}

const (
	rawHeaderSize = 4 + 8 + seqSize
	rawMaxFrame   = 64 << 20 // refuse absurd lengths instead of allocating them
)

// rawConn is one end of a raw connection: the parts client and server
// share.
type rawConn struct {
	nc net.Conn
	r  io.Reader
	w  batchWriter
	rawOut

	done     chan struct{} // closed by fail
	failOnce sync.Once
	err      error // why the connection failed; set before done closes

	rhdr [rawHeaderSize]byte // the reader's header buffer
}

// newRawConn wraps nc with tr.
func newRawConn(nc net.Conn, tr transport) *rawConn {
	r, w := tr(nc)
	return &rawConn{nc: nc, r: r, w: w, done: make(chan struct{})}
}

// fail closes the connection, once, recording why.
func (c *rawConn) fail(err error) {
	c.failOnce.Do(func() {
		c.err = err
		close(c.done)
		c.nc.Close()
	})
}

// closedErr is the error of an operation on a failed connection.
func (c *rawConn) closedErr() error { return fmt.Errorf("connection closed: %w", c.err) }

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
