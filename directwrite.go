package bokbok

import (
	"syscall"
)

// Direct writes: a small message queued while no writer is at work, and
// while at most two calls or handlers are under way, is written by the
// goroutine that queued it (a caller, or a handler replying), without
// blocking and without waking the writer goroutine.
//
// The pusher takes the writer's part for the one message: under the
// queue's lock it checks that the queue holds nothing else and that no
// writer goroutine is writing or about to (none runs, or it lingers), sets
// inline, and takes the message's frame as the writer would (so budget,
// withdrawal and GOAWAY ordering are what they are for any message). While
// inline is set the writer goroutine takes nothing and unlockAndKick does
// not start or wake it; the pusher writes with one system call that does
// not wait for the socket, clears inline, and starts or wakes the writer
// if anything was queued meanwhile or the socket took only part of the
// frame. That part is kept (insecure: in the queue's tail; secure: as
// sealed bytes in the record writer) and written first by the writer, so
// the stream's order is the order frames were taken in.

// directMax is the largest message written directly: its frame is copied
// into a pooled 4 KiB buffer for the one system call.
const directMax = readBufSize - frameHeaderSize

// directWriter writes frames to a socket without blocking. Its fields are
// used only by the goroutine that has set the queue's inline flag.
type directWriter struct {
	raw   syscall.RawConn
	rw    *recordWriter             // a secure connection's record writer, or nil
	write func([]byte) (int, error) // writeNow, made once (the record writer calls it)
	try   func(fd uintptr) bool     // tryWrite, made once (the raw connection calls it)
	frame [1]dataFrame              // the frame being written (kept here, so taking it allocates nothing)

	p   []byte // try's argument
	n   int    // try's result: bytes written
	err error  // try's result
}

func newDirectWriter(raw syscall.RawConn, rw *recordWriter) *directWriter {
	d := &directWriter{raw: raw, rw: rw}
	d.write = d.writeNow
	d.try = d.tryWrite
	return d
}

// writeFrame writes f, returning the bytes the socket did not take
// (insecure) or whether sealed bytes stay in the record writer (secure).
func (d *directWriter) writeFrame(f *dataFrame) (tail []byte, owed bool, err error) {
	if d.rw != nil {
		owed, err = d.rw.sealNow(f.hdr[:], f.payload, d.write)
		return nil, owed, err
	}
	b := readBufPool.Get().(*[]byte)
	p := append(append((*b)[:0], f.hdr[:]...), f.payload...)
	n, err := d.writeNow(p)
	if err == nil && n < len(p) {
		tail = append([]byte(nil), p[n:]...)
	}
	readBufPool.Put(b)
	return tail, false, err
}

// writeNow writes what the socket takes of p at once.
func (d *directWriter) writeNow(p []byte) (int, error) {
	d.p, d.n, d.err = p, 0, nil
	err := d.raw.Write(d.try)
	d.p = nil
	if err != nil {
		return 0, err
	}
	return d.n, d.err
}

// tryWrite is the raw connection's write callback: one attempt, never a
// wait.
func (d *directWriter) tryWrite(fd uintptr) bool {
	d.n, d.err = writeNonBlocking(fd, d.p)
	return true
}

// setDirect lets small messages be written directly through d.
func (q *sendQueue) setDirect(d *directWriter) { q.direct.Store(d) }

// mayWriteDirect reports whether m is one to write directly: it is small,
// the connection can, and few messages are under way. When many are (many
// callers, many handlers), the writer goroutine, which takes what is
// queued together, writes them with fewer system calls and, on a secure
// connection, seals them in fewer records.
func (q *sendQueue) mayWriteDirect(m *outMsg) bool {
	return len(m.data) <= directMax && q.direct.Load() != nil && (q.busy == nil || !q.busy())
}

// canWriteDirectLocked reports whether the message just queued may be
// written by its pusher now: it is alone in the queue, and no writer
// goroutine is writing or about to. q.mu must be held.
func (q *sendQueue) canWriteDirectLocked() bool {
	return q.err == nil && !q.inline && (!q.running || q.linger) && !q.writing &&
		len(q.msgs) == 1 && len(q.ctrl) == 0 && len(q.tail) == 0 && !q.owed
}

// writeDirect writes the one queued message from the calling goroutine
// (see canWriteDirectLocked). It is called with q.mu held and releases it.
func (q *sendQueue) writeDirect() {
	q.inline = true
	d := q.direct.Load()
	frames := q.takeFramesLocked(d.frame[:0])
	q.mu.Unlock()

	tail, owed, err := d.writeFrame(&frames[0])
	frames[0] = dataFrame{} // drop the reference to the message's data
	q.giveBack()

	q.mu.Lock()
	q.inline = false
	if err == nil && q.err == nil {
		q.tail, q.owed = tail, owed
		if tail != nil || owed {
			q.partial++
		}
	}
	q.signalIdleLocked()
	q.unlockAndKick()
	if err != nil && q.overflow != nil {
		q.overflow(err)
	}
}
