package bokbok

import (
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"time"
)

// Records carry the frame stream of a secure connection (PROTOCOL.md,
// "Records"). Each is
//
//	length u32 | Poly1305 tag [16] | XSalsa20 ciphertext of (type u8 | content)
//
// sealed with NaCl secretbox (crypto.go) under the sending direction's key
// with a nonce made of a 64-bit counter, the direction, and zeros. Content
// is the next bytes of the frame stream (DATA) or nothing (CLOSE, the last
// record a side sends); a side's first record holds exactly its SETTINGS
// frame (handshake.go). A record that fails to open, arrives out of order,
// or is missing (the stream ends without CLOSE) ends the connection.

const (
	recordData  = 0x00
	recordClose = 0x01

	recordLenSize     = 4
	maxRecordContent  = 64 << 10
	minSealedRecord   = 1 + recordOverhead
	maxSealedRecord   = 1 + maxRecordContent + recordOverhead
	dirClientToServer = 0x00
	dirServerToClient = 0x01
)

// ErrTruncated reports that a secure connection's stream ended without the
// peer's CLOSE record: the peer died, or someone cut the connection.
var ErrTruncated = errors.New("bokbok: secure stream ended without a close record")

// errPeerGone is ErrTruncated for a stream that ended between records: a
// peer whose process exited without closing its connection, which is
// common and is logged at debug level only. A stream that ends inside a
// record is plain ErrTruncated.
var errPeerGone error = peerGone{}

type peerGone struct{}

func (peerGone) Error() string        { return ErrTruncated.Error() }
func (peerGone) Is(target error) bool { return target == ErrTruncated }

// recordWriter seals the frame stream into records. It buffers written
// bytes and seals them when a record is full or on Flush, so the frames the
// writer goroutine flushes together travel in one record.
type recordWriter struct {
	lock chan struct{} // a token held while using the fields below: by the writer goroutine, or a closing Conn
	w    io.Writer
	key  Key
	dir  byte
	n    uint64 // counter of the next record
	pt   []byte // type byte + content waiting to be sealed
	out  []byte // sealed records waiting to be written
	done bool   // CLOSE sent or the key wiped: nothing more may be sealed
}

func newRecordWriter(w io.Writer, key Key, dir byte) *recordWriter {
	return &recordWriter{w: w, key: key, dir: dir, lock: make(chan struct{}, 1)}
}

func (rw *recordWriter) acquire() { rw.lock <- struct{}{} }
func (rw *recordWriter) release() { <-rw.lock }

// acquireBy waits for the lock until deadline, and reports whether it got
// it. The writer goroutine holds the lock while a write is blocked on the
// network; a closing connection waits only so long for it.
func (rw *recordWriter) acquireBy(deadline time.Time) bool {
	select {
	case rw.lock <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case rw.lock <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

// Write adds p to the stream, sealing full records as it goes.
func (rw *recordWriter) Write(p []byte) (int, error) {
	rw.acquire()
	defer rw.release()
	n := len(p)
	for len(p) > 0 {
		if len(rw.pt) == 0 {
			rw.pt = growRecordBuf(rw.pt, min(1+len(p), 1+maxRecordContent))
			rw.pt = append(rw.pt, recordData)
		}
		take := min(len(p), 1+maxRecordContent-len(rw.pt))
		rw.pt = append(rw.pt, p[:take]...)
		p = p[take:]
		if len(rw.pt) == 1+maxRecordContent {
			if err := rw.sealLocked(); err != nil {
				return 0, err
			}
			if len(rw.out) >= 4*maxSealedRecord {
				if err := rw.writeOutLocked(); err != nil {
					return 0, err
				}
			}
		}
	}
	return n, nil
}

// Flush seals what is buffered and writes all sealed records.
func (rw *recordWriter) Flush() error {
	rw.acquire()
	defer rw.release()
	if len(rw.pt) > 0 {
		if err := rw.sealLocked(); err != nil {
			return err
		}
	}
	return rw.writeOutLocked()
}

// sealLocked seals rw.pt as the next record into rw.out.
func (rw *recordWriter) sealLocked() error {
	if rw.done {
		return ErrClosed
	}
	if rw.n == maxRecordCounter {
		return ErrNonceExhausted
	}
	rw.out = growRecordBuf(rw.out, recordLenSize+len(rw.pt)+recordOverhead)
	rw.out = binary.BigEndian.AppendUint32(rw.out, uint32(len(rw.pt)+recordOverhead))
	rw.out = sealRecord(rw.out, rw.pt, &rw.key, rw.n, rw.dir)
	rw.n++
	rw.pt = rw.pt[:0]
	return nil
}

func (rw *recordWriter) writeOutLocked() error {
	if len(rw.out) == 0 {
		return nil
	}
	_, err := rw.w.Write(rw.out)
	rw.out = rw.out[:0]
	return err
}

// sealNow seals the frame hdr+payload, with anything buffered before it,
// and writes what write takes of the sealed bytes at once (write must not
// block); the rest stays buffered for the next Flush. It reports whether
// bytes stay buffered. The frame must fit one record.
func (rw *recordWriter) sealNow(hdr, payload []byte, write func([]byte) (int, error)) (owed bool, err error) {
	rw.acquire()
	defer rw.release()
	if len(rw.pt)+len(hdr)+len(payload) > 1+maxRecordContent {
		if err := rw.sealLocked(); err != nil {
			return false, err
		}
	}
	if len(rw.pt) == 0 {
		rw.pt = growRecordBuf(rw.pt, 1+len(hdr)+len(payload))
		rw.pt = append(rw.pt, recordData)
	}
	rw.pt = append(rw.pt, hdr...)
	rw.pt = append(rw.pt, payload...)
	if err := rw.sealLocked(); err != nil {
		return false, err
	}
	n, err := write(rw.out)
	if err != nil {
		return false, err
	}
	rw.out = rw.out[:copy(rw.out, rw.out[n:])]
	return len(rw.out) > 0, nil
}

// close writes what is buffered and a CLOSE record, then allows no more
// writes. It gives up if the writer goroutine stays busy (a write blocked
// on the network) until deadline, or if its own write takes longer (when
// the writer is a net.Conn).
func (rw *recordWriter) close(deadline time.Time) error {
	if !rw.acquireBy(deadline) {
		return errors.New("bokbok: writer busy; no close record sent")
	}
	defer rw.release()
	if rw.done {
		return nil
	}
	if d, ok := rw.w.(interface{ SetWriteDeadline(time.Time) error }); ok {
		d.SetWriteDeadline(deadline)
	}
	if len(rw.pt) > 0 {
		if err := rw.sealLocked(); err != nil {
			return err
		}
	}
	rw.pt = append(rw.pt, recordClose)
	if err := rw.sealLocked(); err != nil {
		return err
	}
	rw.done = true
	return rw.writeOutLocked()
}

// shrink gives up large buffers while the connection is idle (to a pool
// that the next burst of any connection takes them from); small ones are
// kept for the next burst. A writer goroutine that started meanwhile may
// have bytes pending: then it keeps everything.
func (rw *recordWriter) shrink() {
	rw.acquire()
	if len(rw.pt) == 0 && len(rw.out) == 0 {
		if cap(rw.pt) > keptRecordBuf {
			putRecordBuf(rw.pt)
			rw.pt = nil
		}
		if cap(rw.out) > keptRecordBuf {
			putRecordBuf(rw.out)
			rw.out = nil
		}
	}
	rw.release()
}

// recordBufs holds the large buffers of idle record writers. A buffer
// grows as a burst needs; buffers beyond maxPooledRecordBuf are left to
// the garbage collector.
var recordBufs sync.Pool

const maxPooledRecordBuf = 4*maxSealedRecord + 4*recordLenSize

func putRecordBuf(b []byte) {
	if cap(b) <= maxPooledRecordBuf {
		b = b[:0]
		recordBufs.Put(&b)
	}
}

// growRecordBuf returns b, or when b cannot take need more bytes a buffer
// from the pool that can (b is small then: its bytes are copied).
func growRecordBuf(b []byte, need int) []byte {
	if cap(b)-len(b) >= need {
		return b
	}
	if p, ok := recordBufs.Get().(*[]byte); ok && cap(*p) >= len(b)+need {
		return append((*p)[:0], b...)
	}
	return b
}

// keptRecordBuf is the largest record-writer buffer an idle connection keeps.
const keptRecordBuf = 4 << 10

// wipe clears the key; the writer seals nothing afterwards.
func (rw *recordWriter) wipe() {
	rw.acquire()
	wipeKeys(&rw.key)
	rw.done = true
	rw.release()
}

// recordReader opens records and serves their content as a byte stream.
// It is used by one goroutine at a time (the handshake, then the reader).
// Its buffers are borrowed from bufPool for one record at a time and given
// back before it waits for the next record.
type recordReader struct {
	r     io.Reader
	key   Key
	dir   byte
	n     uint64 // counter of the next record
	hdr   [recordLenSize]byte
	plain *[]byte // borrowed: the opened record that rest points into, or nil
	rest  []byte  // content not yet read
	err   error   // sticky: once a read fails, every later read fails so
}

func newRecordReader(r io.Reader, key Key, dir byte) *recordReader {
	return &recordReader{r: r, key: key, dir: dir}
}

func (rr *recordReader) Read(p []byte) (int, error) {
	for len(rr.rest) == 0 {
		if rr.err != nil {
			return 0, rr.err
		}
		rr.err = rr.next()
	}
	n := copy(p, rr.rest)
	rr.rest = rr.rest[n:]
	return n, nil
}

// nextRecord opens the next record and returns its whole content, valid
// until the next read: for the first record, which must hold exactly one
// frame. Content of an earlier record not yet read is dropped.
func (rr *recordReader) nextRecord() ([]byte, error) {
	if rr.err == nil {
		rr.err = rr.next()
	}
	if rr.err != nil {
		return nil, rr.err
	}
	content := rr.rest
	rr.rest = nil
	return content, nil
}

// release gives back the borrowed buffer.
func (rr *recordReader) release() {
	if rr.plain != nil {
		putBuf(rr.plain)
		rr.plain, rr.rest = nil, nil
	}
}

// next reads and opens one record.
func (rr *recordReader) next() error {
	rr.release()
	if _, err := io.ReadFull(rr.r, rr.hdr[:]); err != nil {
		switch {
		case err == io.EOF: // nothing of a next record
			return errPeerGone
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			return ErrTruncated
		}
		return err
	}
	size := binary.BigEndian.Uint32(rr.hdr[:])
	if size < minSealedRecord || size > maxSealedRecord {
		return protocolErrorf("record length %d outside %d..%d", size, minSealedRecord, maxSealedRecord)
	}
	sealedBuf := getBuf()
	defer putBuf(sealedBuf)
	sealed := (*sealedBuf)[:size]
	if _, err := io.ReadFull(rr.r, sealed); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return ErrTruncated
		}
		return err
	}
	if rr.n == maxRecordCounter {
		return ErrNonceExhausted
	}
	rr.plain = getBuf()
	plain, ok := openRecord((*rr.plain)[:0], sealed, &rr.key, rr.n, rr.dir)
	if !ok {
		return protocolErrorf("record %d failed authentication (corrupted, forged, replayed or out of order)", rr.n)
	}
	rr.n++
	switch {
	case plain[0] == recordData && len(plain) > 1:
		rr.rest = plain[1:]
		return nil
	case plain[0] == recordClose && len(plain) == 1:
		return io.EOF
	}
	return protocolErrorf("record of type 0x%02x with %d content bytes", plain[0], len(plain)-1)
}

// wipe clears the key and gives back the buffer. Only after the reader
// has stopped.
func (rr *recordReader) wipe() {
	wipeKeys(&rr.key)
	rr.release()
}
