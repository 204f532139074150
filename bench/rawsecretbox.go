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

// raw-secretbox is raw with every flushed write sealed with
// nacl/secretbox: the floor for encrypted framed RPC. There is no
// handshake: both ends know a fixed random key. Each direction of a
// connection opens with a 16-byte random nonce prefix in clear; a box's
// nonce is that prefix and a 64-bit counter. On the wire a box is
// [4-byte length][sealed bytes]. A flush seals what was buffered; a write
// larger than maxBoxPlain is cut into boxes of that size (as bokbok cuts
// its records at 64 KiB).
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

func boxTransport(nc net.Conn) (io.Reader, flushWriter) {
	w := &boxWriter{nc: nc, key: secretboxKey}
	if _, err := rand.Read(w.nonce[:16]); err != nil {
		panic(err)
	}
	return &boxReader{src: bufio.NewReader(nc), key: secretboxKey}, w
}

// boxWriter buffers plaintext and writes it out as sealed boxes.
type boxWriter struct {
	nc         io.Writer
	key        *[32]byte
	nonce      [24]byte // random prefix, then the counter of the next box
	n          uint64
	sentPrefix bool
	plain      []byte // plaintext not yet sealed
	out        []byte // the box being written
}

func (w *boxWriter) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if len(w.plain) == maxBoxPlain {
			if err := w.seal(); err != nil {
				return total - len(p), err
			}
		}
		k := min(maxBoxPlain-len(w.plain), len(p))
		w.plain = append(w.plain, p[:k]...)
		p = p[k:]
	}
	return total, nil
}

func (w *boxWriter) Flush() error {
	if len(w.plain) == 0 {
		return nil
	}
	return w.seal()
}

// seal seals the buffered plaintext into one box and writes it.
func (w *boxWriter) seal() error {
	w.out = w.out[:0]
	if !w.sentPrefix {
		w.out = append(w.out, w.nonce[:16]...)
		w.sentPrefix = true
	}
	w.out = binary.BigEndian.AppendUint32(w.out, uint32(len(w.plain)+secretbox.Overhead))
	binary.BigEndian.PutUint64(w.nonce[16:], w.n)
	w.n++
	w.out = secretbox.Seal(w.out, w.plain, &w.nonce, w.key)
	w.plain = w.plain[:0]
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
