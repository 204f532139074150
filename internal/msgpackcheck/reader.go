package msgpackcheck

import (
	"errors"
	"io"
)

// ErrExtPayload is the error a Reader gives when the decoder tries to read
// a msgpack item from inside an extension's payload.
var ErrExtPayload = errors.New("msgpack: an extension's payload read as msgpack (send a map, not an extension, where a map is expected)")

// Reader reads checked bytes for a msgpack decoder. It is an
// io.ByteScanner, which msgpack v5 reads item heads through (ReadByte)
// and bulk bytes through (Read). A ReadByte inside an extension payload
// fails with ErrExtPayload; Read does not, so payloads can still be read
// as bytes.
type Reader struct {
	b       []byte
	pos     int
	exts    []span // payloads, in order; exts[next:] lie at or after pos
	next    int
	aliased bool // Next has handed out part of b
}

// Reset makes r read b, whose extension payloads info lists.
func (r *Reader) Reset(b []byte, info Info) {
	r.b, r.pos, r.exts, r.next, r.aliased = b, 0, info.exts, 0, false
}

// Aliased reports whether Next has returned part of the bytes since the
// last Reset: whether what was decoded may refer to them.
func (r *Reader) Aliased() bool { return r.aliased }

// Len returns how many bytes are left.
func (r *Reader) Len() int { return len(r.b) - r.pos }

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	if r.pos >= len(r.b) {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := copy(p, r.b[r.pos:])
	r.pos += n
	return n, nil
}

// ReadByte implements io.ByteReader, refusing bytes inside extension
// payloads.
func (r *Reader) ReadByte() (byte, error) {
	if r.pos >= len(r.b) {
		return 0, io.EOF
	}
	for r.next < len(r.exts) && r.exts[r.next].end <= r.pos {
		r.next++
	}
	if r.next < len(r.exts) && r.exts[r.next].start <= r.pos {
		return 0, ErrExtPayload
	}
	c := r.b[r.pos]
	r.pos++
	return c, nil
}

// UnreadByte implements io.ByteScanner.
func (r *Reader) UnreadByte() error {
	if r.pos == 0 {
		return errors.New("msgpackcheck: UnreadByte at the start")
	}
	r.pos--
	for r.next > 0 && r.exts[r.next-1].end > r.pos {
		r.next--
	}
	return nil
}

// Next returns the next n bytes without copying them, and advances past
// them; ok is false (and nothing is read) if fewer than n are left. The
// slice's capacity ends with it, so appending to it copies rather than
// overwrite the bytes after it.
func (r *Reader) Next(n int) (b []byte, ok bool) {
	if n < 0 || n > len(r.b)-r.pos {
		return nil, false
	}
	b = r.b[r.pos : r.pos+n : r.pos+n]
	r.pos += n
	r.aliased = true
	return b, true
}
