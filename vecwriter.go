package bokbok

import (
	"io"
	"net"
	"sync"
)

// vecWriter is the insecure writer's frameSink. Small writes (headers,
// control frames, small payloads) are copied into one buffer; a large
// payload is not copied but queued by reference, and Flush hands the
// pieces to the kernel in one vectored write (writev). The payloads it
// refers to must stay unchanged until Flush returns: message data does
// (see sendQueue.giveBack).
type vecWriter struct {
	w       io.Writer
	small   []byte      // copied bytes
	start   int         // where the current run of copied bytes begins in small
	bufs    net.Buffers // pieces to write, in order
	pending int         // bytes in bufs and small[start:]
}

// largeWrite is the size from which a write is referenced, not copied.
const largeWrite = 8 << 10

// maxPending makes Write flush early, bounding what one flush carries.
const maxPending = 512 << 10

var vecWriterPool = sync.Pool{New: func() any { return &vecWriter{small: make([]byte, 0, 8<<10)} }}

func (v *vecWriter) Write(p []byte) (int, error) {
	if len(p) >= largeWrite {
		v.cut()
		v.bufs = append(v.bufs, p)
	} else {
		v.small = append(v.small, p...)
	}
	v.pending += len(p)
	if v.pending >= maxPending {
		return len(p), v.Flush()
	}
	return len(p), nil
}

// cut ends the current run of copied bytes, queueing it as a piece. A
// later append to small may move it, but the piece keeps the old array.
func (v *vecWriter) cut() {
	if len(v.small) > v.start {
		v.bufs = append(v.bufs, v.small[v.start:len(v.small):len(v.small)])
		v.start = len(v.small)
	}
}

func (v *vecWriter) Flush() error {
	v.cut()
	if len(v.bufs) == 0 {
		return nil
	}
	pieces := v.bufs // WriteTo consumes its receiver
	_, err := pieces.WriteTo(v.w)
	clear(v.bufs) // drop references to payloads
	v.bufs = v.bufs[:0]
	v.small, v.start, v.pending = v.small[:0], 0, 0
	return err
}

// reset prepares v for another connection (w) or, with nil, for the pool.
func (v *vecWriter) reset(w io.Writer) {
	v.w = w
	clear(v.bufs)
	v.bufs = v.bufs[:0]
	v.small, v.start, v.pending = v.small[:0], 0, 0
	if cap(v.small) > 64<<10 {
		v.small = make([]byte, 0, 8<<10) // do not keep a grown buffer in the pool
	}
}
