package bokbok

import (
	"encoding/binary"
	"errors"
	"io"
)

// A frame is the unit on the wire (PROTOCOL.md, "Frames"):
//
//	kind u8 | flags u8 | length u16 | id u32 | payload [length]byte
//
// all integers big-endian. A frame is at most 64 KiB including its header,
// so the secure record layer can seal one frame, or a batch of them, per
// record.
const (
	frameHeaderSize = 8
	maxFrameSize    = 64 << 10
	maxFramePayload = maxFrameSize - frameHeaderSize
)

type frameKind uint8

// Frame kinds. Their meaning is in PROTOCOL.md.
const (
	kindSettings frameKind = 0x01
	kindRequest  frameKind = 0x02
	kindResponse frameKind = 0x03
	kindError    frameKind = 0x04
	kindNotify   frameKind = 0x05
	kindCancel   frameKind = 0x06
	kindPing     frameKind = 0x07
	kindPong     frameKind = 0x08
	kindGoAway   frameKind = 0x09
	kindCredit   frameKind = 0x0a
)

// flagNested on a REQUEST frame says the request was made by a handler
// while serving another request, so the receiver runs it without queueing
// (see PROTOCOL.md, "Handler limit").
const flagNested uint8 = 0x01

var kindNames = [...]string{
	kindSettings: "SETTINGS", kindRequest: "REQUEST", kindResponse: "RESPONSE",
	kindError: "ERROR", kindNotify: "NOTIFY", kindCancel: "CANCEL", kindPing: "PING",
	kindPong: "PONG", kindGoAway: "GOAWAY", kindCredit: "CREDIT",
}

func (k frameKind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "UNKNOWN"
}

type frameHeader struct {
	kind   frameKind
	flags  uint8
	length uint16 // payload length
	id     uint32
}

func (h frameHeader) put(b []byte) {
	b[0] = byte(h.kind)
	b[1] = h.flags
	binary.BigEndian.PutUint16(b[2:4], h.length)
	binary.BigEndian.PutUint32(b[4:8], h.id)
}

// appendFrameHeader appends the encoded header to b.
func appendFrameHeader(b []byte, kind frameKind, flags uint8, length int, id uint32) []byte {
	var hdr [frameHeaderSize]byte
	frameHeader{kind: kind, flags: flags, length: uint16(length), id: id}.put(hdr[:])
	return append(b, hdr[:]...)
}

// parseFrameHeader decodes and validates a header. Everything a header alone
// can get wrong is rejected here, before any payload is read.
func parseFrameHeader(b []byte) (frameHeader, error) {
	h := frameHeader{
		kind:   frameKind(b[0]),
		flags:  b[1],
		length: binary.BigEndian.Uint16(b[2:4]),
		id:     binary.BigEndian.Uint32(b[4:8]),
	}
	if int(h.length) > maxFramePayload {
		return h, protocolErrorf("%s frame payload of %d bytes exceeds %d", h.kind, h.length, maxFramePayload)
	}
	switch h.kind {
	case kindSettings:
		if h.id != 0 {
			return h, protocolErrorf("SETTINGS frame with id %d, want 0", h.id)
		}
	case kindRequest, kindResponse, kindError, kindNotify:
		if h.id == 0 {
			return h, protocolErrorf("%s frame with id 0", h.kind)
		}
		if h.length == 0 {
			return h, protocolErrorf("empty %s frame", h.kind)
		}
	case kindCancel:
		if h.id == 0 {
			return h, protocolErrorf("CANCEL frame with id 0")
		}
		fallthrough
	case kindPing, kindPong, kindGoAway, kindCredit:
		if h.length != 0 {
			return h, protocolErrorf("%s frame with a %d-byte payload, want none", h.kind, h.length)
		}
	default:
		return h, protocolErrorf("unknown frame kind 0x%02x", byte(h.kind))
	}
	return h, nil
}

// frameReader reads frames from a byte stream. A payload is valid only
// until the next call to next: it lives in a buffer borrowed from bufPool,
// which next gives back before it waits for the following frame.
type frameReader struct {
	r    io.Reader
	hdr  [frameHeaderSize]byte
	held *[]byte // the borrowed buffer of the last payload, or nil

	// dest, if set, may name where a frame's payload should be read to:
	// the free end of the buffer of the message it continues, so that
	// large messages are read in place rather than copied there. It returns
	// nil for the frames it has no place for.
	dest func(h frameHeader) []byte
}

// release gives back the last payload's buffer.
func (fr *frameReader) release() {
	if fr.held != nil {
		putBuf(fr.held)
		fr.held = nil
	}
}

// next reads one frame. A stream that ends cleanly between frames gives
// io.EOF; one that ends inside a frame gives a *ProtocolError wrapping
// io.ErrUnexpectedEOF.
func (fr *frameReader) next() (frameHeader, []byte, error) {
	fr.release()
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return frameHeader{}, nil, &ProtocolError{Reason: "truncated frame header", Err: err}
		}
		return frameHeader{}, nil, err
	}
	h, err := parseFrameHeader(fr.hdr[:])
	if err != nil {
		return h, nil, err
	}
	if h.length == 0 {
		return h, nil, nil
	}
	var p []byte
	if fr.dest != nil {
		p = fr.dest(h)
	}
	if p == nil {
		fr.held = getBuf()
		p = (*fr.held)[:h.length]
	}
	if _, err := io.ReadFull(fr.r, p); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return h, nil, &ProtocolError{Reason: "truncated " + h.kind.String() + " frame", Err: io.ErrUnexpectedEOF}
		}
		return h, nil, err
	}
	return h, p, nil
}
