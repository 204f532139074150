package bokbok

import (
	"bufio"
	"io"
	"net"
	"sync"
	"syscall"
)

// The read side of an open connection holds no buffer while it waits.
//
// The opening reads through a bufio.Reader (it peeks at what a peer has
// sent before doing costly work). Once the connection is open, a TCP or
// Unix connection is read through a connReader instead: it tries each read
// without blocking into a 4 KiB buffer borrowed from a pool, and when
// nothing is there it gives the buffer back before the goroutine parks
// until the socket is readable. An idle connection therefore holds no read
// buffer at all; a busy one reads as a bufio.Reader of the same size
// would. Other net.Conn types (net.Pipe, wrappers) keep the bufio.Reader.

// readBufSize is the read buffer's size, the opening's and connReader's.
const readBufSize = 4 << 10

// readerPool holds the opening's bufio.Readers between connections.
var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufSize) }}

// readBufPool holds connReader's buffers while no connection reads into
// them, and lends them to direct writes (directwrite.go).
var readBufPool = sync.Pool{New: func() any {
	b := make([]byte, readBufSize)
	return &b
}}

// newOpeningReader returns a pooled bufio.Reader reading nc.
func newOpeningReader(nc net.Conn) *bufio.Reader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(nc)
	return br
}

// connReader reads an open connection's bytes. Only the connection's reader
// goroutine uses it.
type connReader struct {
	nc   net.Conn
	raw  syscall.RawConn
	buf  *[]byte // borrowed while it holds bytes or a read is tried; nil while waiting
	r, w int     // (*buf)[r:w] is what has been read and not consumed

	try    func(fd uintptr) bool // the non-blocking read attempt, made once
	n      int                   // try's result: bytes read
	tryErr error                 // try's result: the read's error
}

// newConnReader returns a reader of nc, whose raw connection is raw, for
// after the opening, taking over what br has buffered. br goes back to its
// pool.
func newConnReader(nc net.Conn, raw syscall.RawConn, br *bufio.Reader) *connReader {
	cr := &connReader{nc: nc, raw: raw}
	cr.try = cr.tryRead
	if n := br.Buffered(); n > 0 {
		cr.buf = readBufPool.Get().(*[]byte)
		left, _ := br.Peek(n)
		cr.w = copy(*cr.buf, left)
	}
	br.Reset(nil)
	readerPool.Put(br)
	return cr
}

// rawConnOf returns nc's raw connection when reads and writes can be tried
// without blocking on this platform, or nil.
func rawConnOf(nc net.Conn) syscall.RawConn {
	if !canTryIO {
		return nil
	}
	sc, ok := nc.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return nil
	}
	switch nc.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return nil // its bytes may not be the socket's (a wrapper)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// Read reads like bufio.Reader.Read: from the buffer if it holds bytes,
// else straight into p if p is at least a buffer long, else through the
// buffer.
func (cr *connReader) Read(p []byte) (int, error) {
	if cr.r == cr.w {
		if len(p) >= readBufSize {
			return cr.nc.Read(p)
		}
		if err := cr.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, (*cr.buf)[cr.r:cr.w])
	cr.r += n
	return n, nil
}

// fill reads into the empty buffer, waiting until there is something.
func (cr *connReader) fill() error {
	cr.r, cr.w = 0, 0
	cr.n, cr.tryErr = 0, nil
	err := cr.raw.Read(cr.try)
	if err == nil {
		err = cr.tryErr
	}
	if err == nil && cr.n == 0 {
		err = io.EOF
	}
	if err != nil {
		cr.release()
		if _, ok := err.(*net.OpError); !ok && err != io.EOF {
			err = &net.OpError{Op: "read", Net: cr.nc.LocalAddr().Network(), Source: cr.nc.LocalAddr(), Addr: cr.nc.RemoteAddr(), Err: err}
		}
		return err
	}
	cr.w = cr.n
	return nil
}

// tryRead is the raw connection's read callback: it reads what the socket
// holds into the buffer (borrowing one if need be) and reports true, or,
// if the socket holds nothing yet, gives the buffer back and reports false
// so that the runtime parks the goroutine until the socket is readable.
func (cr *connReader) tryRead(fd uintptr) bool {
	if cr.buf == nil {
		cr.buf = readBufPool.Get().(*[]byte)
	}
	n, wait, err := readNonBlocking(fd, *cr.buf)
	if wait {
		cr.release()
		return false
	}
	cr.n, cr.tryErr = n, err
	return true
}

// release gives the buffer back; what it held must have been consumed.
func (cr *connReader) release() {
	if cr.buf != nil {
		readBufPool.Put(cr.buf)
		cr.buf = nil
	}
	cr.r, cr.w = 0, 0
}
