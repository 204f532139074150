package main

import (
	"encoding/binary"
	"net"
	"sync"
)

// Writes on a raw connection are coalesced under a mutex, without a writer
// goroutine or a queue. A sender appends its frame to the pending batch
// and, if no other sender is writing, becomes the flusher: it takes the
// batch, writes it with one system call (vectored when it holds large
// Data) and repeats while other senders appended more in the meantime.
// Those others return as soon as their frame is appended.

const (
	// rawCopyMax is the largest Data copied into the batch; larger Data
	// is written from where it lies, as a piece of its own.
	rawCopyMax = 4 << 10
	// rawKeepBuf is the largest buffer kept for the next batch (64 KiB
	// and room for a sealed box's framing); a larger one is dropped once
	// written, so an idle connection does not hold it.
	rawKeepBuf = 64<<10 + 64
)

// bigData is a Data over rawCopyMax in the pending batch: it goes on the
// wire right after buf[:at].
type bigData struct {
	at   int
	data []byte
}

// rawOut is a connection's write side.
type rawOut struct {
	wmu      sync.Mutex
	flushing bool      // a sender is writing batches; others only append
	buf      []byte    // the pending frames, without their bigs
	bigs     []bigData // the pending frames' large Data, in order
	spare    []byte    // the last batch's buffer, emptied, for the next

	iov net.Buffers // the flusher's: the batch being written, in pieces
}

// send appends a frame to the pending batch and, unless another sender is
// writing, writes batches until none is pending. It returns once its
// frame is appended, or written if it became the flusher. A write error
// fails the connection, so the callers waiting for replies to frames lost
// with it see the failure. Data over rawCopyMax is written from m.Data, so
// it must not change until the reply arrives or the connection fails.
func (c *rawConn) send(id uint64, m *Msg) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	select {
	case <-c.done:
		return c.closedErr()
	default:
	}
	c.buf = binary.BigEndian.AppendUint32(c.buf, uint32(8+seqSize+len(m.Data)))
	c.buf = binary.BigEndian.AppendUint64(c.buf, id)
	c.buf = binary.BigEndian.AppendUint64(c.buf, uint64(m.Seq))
	if len(m.Data) > rawCopyMax {
		c.bigs = append(c.bigs, bigData{len(c.buf), m.Data})
	} else {
		c.buf = append(c.buf, m.Data...)
	}
	if c.flushing {
		return nil
	}
	c.flushing = true
	defer func() { c.flushing = false }()
	for len(c.buf) > 0 { // every frame leaves at least its header in buf
		buf, bigs := c.buf, c.bigs
		c.buf, c.bigs, c.spare = c.spare[:0], nil, nil
		c.wmu.Unlock()
		err := c.writeBatch(buf, bigs)
		c.wmu.Lock()
		if err != nil {
			c.fail(err)
			c.buf, c.bigs = nil, nil
			return err
		}
		if cap(buf) <= rawKeepBuf {
			c.spare = buf[:0]
		}
	}
	return nil
}

// writeBatch writes buf with each big Data in its place.
func (c *rawConn) writeBatch(buf []byte, bigs []bigData) error {
	iov := c.iov[:0]
	at := 0
	for _, b := range bigs {
		iov = append(iov, buf[at:b.at], b.data)
		at = b.at
	}
	if at < len(buf) {
		iov = append(iov, buf[at:])
	}
	err := c.w.writeBatch(iov)
	clear(iov) // do not pin written Data
	c.iov = iov[:0]
	return err
}
