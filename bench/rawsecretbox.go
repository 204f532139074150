package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/crypto/nacl/secretbox"
)

// raw-secretbox is raw with every batch of frames sealed with
// nacl/secretbox: the floor for encrypted framed RPC. There is no
// handshake: both ends know a fixed random key. Each direction of a
// connection opens with a 16-byte random nonce prefix in clear; a box's
// nonce is that prefix and a 64-bit counter. On the wire a box is
// [4-byte length][sealed bytes]. A batch (see rawwrite.go) is sealed as
// one box, or cut into boxes of maxBoxPlain bytes when it is larger (as
// bokbok cuts its records at 64 KiB).
type rawSecretboxSystem struct{}

// secretboxKey is the fixed key shared by every raw-secretbox connection.
var secretboxKey = func() *[32]byte {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		panic(err)
	}
	return &k
}()

const maxBoxPlain = 64 << 10

func (rawSecretboxSystem) name() string { return "raw-secretbox" }

func (rawSecretboxSystem) start() (string, func(), error) { return startRawServer(boxTransport) }

func (rawSecretboxSystem) dial(ctx context.Context, addr string) (client, error) {
	return dialRaw(ctx, addr, boxTransport)
}

// boxTransport is raw-secretbox's: a boxReader over a 4 KiB bufio.Reader
// and a boxWriter.
func boxTransport(nc net.Conn) (io.Reader, batchWriter) {
	w := &boxWriter{nc: nc, key: secretboxKey}
	if _, err := rand.Read(w.nonce[:16]); err != nil {
		panic(err)
	}
	return &boxReader{src: bufio.NewReader(nc), key: secretboxKey}, w
}

// boxWriter seals each batch into boxes of at most maxBoxPlain bytes of
// plaintext and writes them, one system call per box.
type boxWriter struct {
	nc         io.Writer
	key        *[32]byte
	nonce      [24]byte // random prefix, then the counter of the next box
	n          uint64
	sentPrefix bool
	plain      []byte // a box's plaintext gathered from several pieces
	out        []byte // the box being written
}

// writeBatch seals b, cut into boxes. A box whose plaintext lies in one
// piece of b is sealed from it in place; one that spans pieces is
// gathered into plain first.
func (w *boxWriter) writeBatch(b net.Buffers) error {
	defer func() { w.plain, w.out = keepBuf(w.plain), keepBuf(w.out) }()
	for len(b) > 0 {
		var plain []byte
		if len(b) == 1 || len(b[0]) >= maxBoxPlain {
			plain = b[0][:min(len(b[0]), maxBoxPlain)]
			b[0] = b[0][len(plain):]
		} else {
			if need := min(maxBoxPlain, batchLen(b)); cap(w.plain) < need {
				w.plain = make([]byte, 0, need) // exactly, so keepBuf keeps it
			}
			w.plain = w.plain[:0]
			for len(b) > 0 && len(w.plain) < maxBoxPlain {
				k := min(maxBoxPlain-len(w.plain), len(b[0]))
				w.plain = append(w.plain, b[0][:k]...)
				b[0] = b[0][k:]
				if len(b[0]) == 0 {
					b = b[1:]
				}
			}
			plain = w.plain
		}
		if len(b) > 0 && len(b[0]) == 0 {
			b = b[1:]
		}
		if err := w.seal(plain); err != nil {
			return err
		}
	}
	return nil
}

// batchLen is the number of bytes in b.
func batchLen(b net.Buffers) int {
	n := 0
	for _, p := range b {
		n += len(p)
	}
	return n
}

// keepBuf returns b emptied, or nil if it grew over rawKeepBuf.
func keepBuf(b []byte) []byte {
	if cap(b) > rawKeepBuf {
		return nil
	}
	return b[:0]
}

// seal seals plain into one box and writes it.
func (w *boxWriter) seal(plain []byte) error {
	if need := 16 + 4 + len(plain) + secretbox.Overhead; cap(w.out) < need {
		w.out = make([]byte, 0, need) // exactly, so keepBuf keeps it
	}
	w.out = w.out[:0]
	if !w.sentPrefix {
		w.out = append(w.out, w.nonce[:16]...)
		w.sentPrefix = true
	}
	w.out = binary.BigEndian.AppendUint32(w.out, uint32(len(plain)+secretbox.Overhead))
	binary.BigEndian.PutUint64(w.nonce[16:], w.n)
	w.n++
	w.out = secretbox.Seal(w.out, plain, &w.nonce, w.key)
	_, err := w.nc.Write(w.out)
	return err
}

// boxReader reads boxes, opens them and serves their plaintext.
type boxReader struct {
	src       *bufio.Reader
	key       *[32]byte
	nonce     [24]byte
	n         uint64
	gotPrefix bool
	hdr       [4]byte
	box       []byte // the sealed box last read
	buf       []byte // its plaintext
	plain     []byte // the part of buf not yet read
}

func (r *boxReader) Read(p []byte) (int, error) {
	for len(r.plain) == 0 {
		if err := r.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.plain)
	r.plain = r.plain[n:]
	return n, nil
}

// next reads and opens the next box.
func (r *boxReader) next() error {
	if !r.gotPrefix {
		if _, err := io.ReadFull(r.src, r.nonce[:16]); err != nil {
			return err
		}
		r.gotPrefix = true
	}
	if _, err := io.ReadFull(r.src, r.hdr[:]); err != nil {
		return err
	}
	n := int(binary.BigEndian.Uint32(r.hdr[:]))
	if n < secretbox.Overhead || n > maxBoxPlain+secretbox.Overhead {
		return fmt.Errorf("raw-secretbox: bad box length %d", n)
	}
	if cap(r.box) < n {
		r.box = make([]byte, n)
	}
	r.box = r.box[:n]
	if _, err := io.ReadFull(r.src, r.box); err != nil {
		return err
	}
	binary.BigEndian.PutUint64(r.nonce[16:], r.n)
	r.n++
	out, ok := secretbox.Open(r.buf[:0], r.box, &r.nonce, r.key)
	if !ok {
		return errors.New("raw-secretbox: box failed to open")
	}
	r.buf, r.plain = out, out
	return nil
}
