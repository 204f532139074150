package bokbok

import (
	"encoding/binary"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/bokbok-go/bokbok/internal/msgpackcheck"
)

// Message headers (PROTOCOL.md, "Message headers"): a REQUEST, NOTIFY,
// RESPONSE or ERROR whose frames carry flagHeader has a header in front of
// its version 1 body. The header is a msgpack map with small integer keys:
//
//	0: the method name, a string of at most 255 bytes
//	1: metadata, a map of at most 64 string keys to string or binary values
//	2: an ERROR's details, one msgpack value of at most
//	   MaxErrorDetailsSize bytes (on other kinds, skipped as unknown)
//
// It is parsed by the reader when the message is whole, so routing and
// middleware learn the method and metadata without decoding the body.
// Headers are sent only to a peer whose SETTINGS announce them.

// flagHeader on a message frame says the message's body starts with a
// header. It is set on every frame of the message; receivers read it from
// the first.
const flagHeader uint8 = 0x02

// Header keys.
const (
	headerMethod   = 0
	headerMetadata = 1
	headerDetails  = 2 // on an ERROR only: its details (RemoteError.Details)
)

// Header bounds, part of the protocol: a sender MUST keep within them and
// a receiver refuses a header that does not.
const (
	maxHeaderBytes      = 16 << 10 // the encoded header map
	maxMethodLen        = 255      // bytes of a method name
	maxMetadataEntries  = 64       // entries of the metadata map
	maxMetadataKeyLen   = 255      // bytes of a metadata key
	headersVersion      = 1        // the value of the "headers" setting we send
	maxInternedMethods  = 256      // method names a connection keeps one copy of
	maxInternedMethodSz = 64       // longest method name it keeps
)

// appendHeader appends the header for method and md to b. An empty method
// and empty metadata are left out; the caller sends no header at all when
// both are empty.
func appendHeader(b []byte, method string, md Metadata) ([]byte, error) {
	return appendHeaderDetails(b, method, md, nil)
}

// appendHeaderDetails is appendHeader with an ERROR's details: details, if
// not nil, is one well-formed msgpack value (see RemoteError.WithDetails),
// appended as it is under key 2, after the method and the metadata. The
// caller keeps details within MaxErrorDetailsSize.
func appendHeaderDetails(b []byte, method string, md Metadata, details []byte) ([]byte, error) {
	if len(method) > maxMethodLen {
		return b, fmt.Errorf("%w: method name of %d bytes, limit %d", ErrBadMetadata, len(method), maxMethodLen)
	}
	if len(md) > maxMetadataEntries {
		return b, fmt.Errorf("%w: %d metadata entries, limit %d", ErrBadMetadata, len(md), maxMetadataEntries)
	}
	start := len(b)
	n := 0
	if method != "" {
		n++
	}
	if len(md) > 0 {
		n++
	}
	if details != nil {
		n++
	}
	b = append(b, 0x80|byte(n)) // fixmap
	if method != "" {
		b = append(b, headerMethod)
		b = appendMsgpackStr(b, method)
	}
	if len(md) > 0 {
		b = append(b, headerMetadata)
		b = appendMsgpackMapLen(b, len(md))
		keys := make([]string, 0, len(md))
		for k := range md {
			if k == "" || len(k) > maxMetadataKeyLen {
				return b[:start], fmt.Errorf("%w: metadata key of %d bytes, want 1 to %d", ErrBadMetadata, len(k), maxMetadataKeyLen)
			}
			keys = append(keys, k)
		}
		slices.Sort(keys) // a stable encoding: the same metadata, the same bytes
		for _, k := range keys {
			b = appendMsgpackStr(b, k)
			if v := md[k]; utf8.ValidString(v) {
				b = appendMsgpackStr(b, v)
			} else {
				b = appendMsgpackBin(b, v)
			}
		}
	}
	if details != nil {
		b = append(b, headerDetails)
		b = append(b, details...)
	}
	if len(b)-start > maxHeaderBytes {
		return b[:start], fmt.Errorf("%w: header of %d bytes, limit %d", ErrBadMetadata, len(b)-start, maxHeaderBytes)
	}
	return b, nil
}

// header is a parsed message header.
type header struct {
	method  string
	md      Metadata
	details []byte // an ERROR's details: a part of the body, or nil
	cost    int64  // estimated memory of method and md, for the receive budget
}

// Estimated memory of a parsed header, in the manner of the message
// decoding estimate: a string header and its bytes for the method; a map
// with its first group of slots, and per entry two string headers, a
// share of later groups, and the bytes.
const (
	costHeaderString = 16
	costHeaderMap    = 64 + 288
	costHeaderEntry  = 64 + 2*costHeaderString
)

// parseHeader splits a header from the front of a message body. intern,
// if not nil, turns the method's bytes into a string (so a connection can
// keep one copy of each name it sees often). The header must be exactly as
// PROTOCOL.md says; anything else is an error naming what is wrong. Key 2
// is skipped as an unknown key: it has a meaning on an ERROR only (see
// parseHeaderOf).
func parseHeader(body []byte, intern func([]byte) string) (header, []byte, error) {
	return parseHeaderOf(body, intern, false)
}

// parseHeaderOf is parseHeader for a message that is an ERROR if isError.
// An ERROR's header may carry details under key 2: at most once, one
// well-formed msgpack value of at most MaxErrorDetailsSize bytes, which
// h.details is then (a part of body).
func parseHeaderOf(body []byte, intern func([]byte) string, isError bool) (header, []byte, error) {
	var h header
	n, rest, ok := cutMsgpackMap(body)
	if !ok {
		return h, nil, headerErrorf("not a msgpack map")
	}
	seen := [3]bool{}
	for range n {
		if len(body)-len(rest) > maxHeaderBytes {
			return h, nil, headerErrorf("longer than %d bytes", maxHeaderBytes)
		}
		key, r, ok := cutMsgpackUint(rest)
		if !ok {
			return h, nil, headerErrorf("a key that is not a non-negative integer")
		}
		rest = r
		details := key == headerDetails && isError // key 2 means details on an ERROR only
		if key == headerMethod || key == headerMetadata || details {
			if seen[key] {
				return h, nil, headerErrorf("key %d appears more than once", key)
			}
			seen[key] = true
		}
		switch {
		case key == headerMethod:
			s, r, ok := cutMsgpackStr(rest)
			if !ok || len(s) > maxMethodLen {
				return h, nil, headerErrorf("the method is not a string of at most %d bytes", maxMethodLen)
			}
			rest = r
			if intern != nil {
				h.method = intern(s)
			} else {
				h.method = string(s)
			}
			h.cost += costHeaderString + int64(len(s))
		case key == headerMetadata:
			md, r, err := parseMetadata(rest)
			if err != nil {
				return h, nil, err
			}
			h.md, rest = md, r
			if md != nil {
				h.cost += costHeaderMap + int64(len(md))*costHeaderEntry + int64(len(body)-len(r)) // the entries' bytes are within the header's
			}
		case details:
			r, ok := skipMsgpackValue(rest)
			switch {
			case !ok:
				return h, nil, headerErrorf("the details are not well-formed msgpack")
			case len(rest)-len(r) > MaxErrorDetailsSize:
				return h, nil, headerErrorf("details of %d bytes, limit %d", len(rest)-len(r), MaxErrorDetailsSize)
			}
			h.details, rest = rest[:len(rest)-len(r)], r
		default: // a later version's key: any well-formed value, skipped
			r, ok := skipMsgpackValue(rest)
			if !ok {
				return h, nil, headerErrorf("key %d has a value that is not well-formed msgpack", key)
			}
			rest = r
		}
	}
	if len(body)-len(rest) > maxHeaderBytes {
		return h, nil, headerErrorf("longer than %d bytes", maxHeaderBytes)
	}
	return h, rest, nil
}

// parseMetadata parses the metadata map of a header.
func parseMetadata(b []byte) (Metadata, []byte, error) {
	n, rest, ok := cutMsgpackMap(b)
	switch {
	case !ok:
		return nil, nil, headerErrorf("the metadata is not a msgpack map")
	case n > maxMetadataEntries:
		return nil, nil, headerErrorf("%d metadata entries, limit %d", n, maxMetadataEntries)
	case n == 0:
		return nil, rest, nil
	}
	md := make(Metadata, n)
	for range n {
		k, r, ok := cutMsgpackStr(rest)
		if !ok || len(k) == 0 || len(k) > maxMetadataKeyLen {
			return nil, nil, headerErrorf("a metadata key that is not a string of 1 to %d bytes", maxMetadataKeyLen)
		}
		v, r, ok := cutMsgpackStrOrBin(r)
		if !ok {
			return nil, nil, headerErrorf("metadata %q has a value that is neither a string nor binary", k)
		}
		if _, dup := md[string(k)]; dup {
			return nil, nil, headerErrorf("metadata key %q appears more than once", k)
		}
		md[string(k)] = string(v)
		rest = r
	}
	return md, rest, nil
}

func headerErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: message header: %s", ErrBadMetadata, fmt.Sprintf(format, args...))
}

// cutMsgpackMap reads a msgpack map header from the front of b.
func cutMsgpackMap(b []byte) (n uint64, rest []byte, ok bool) {
	switch {
	case len(b) >= 1 && b[0]&0xf0 == 0x80: // fixmap
		return uint64(b[0] & 0x0f), b[1:], true
	case len(b) >= 3 && b[0] == 0xde: // map 16
		return uint64(binary.BigEndian.Uint16(b[1:])), b[3:], true
	case len(b) >= 5 && b[0] == 0xdf: // map 32
		return uint64(binary.BigEndian.Uint32(b[1:])), b[5:], true
	}
	return 0, nil, false
}

// cutMsgpackUint reads a non-negative msgpack integer from the front of b.
func cutMsgpackUint(b []byte) (uint64, []byte, bool) {
	v, n, err := readMsgpackUint(b)
	if err != nil {
		return 0, nil, false
	}
	return v, b[n:], true
}

// cutMsgpackStrOrBin reads a msgpack string or binary from the front of b.
func cutMsgpackStrOrBin(b []byte) (s, rest []byte, ok bool) {
	var n uint64
	switch {
	case len(b) >= 2 && b[0] == 0xc4: // bin 8
		n, b = uint64(b[1]), b[2:]
	case len(b) >= 3 && b[0] == 0xc5: // bin 16
		n, b = uint64(binary.BigEndian.Uint16(b[1:])), b[3:]
	case len(b) >= 5 && b[0] == 0xc6: // bin 32
		n, b = uint64(binary.BigEndian.Uint32(b[1:])), b[5:]
	default:
		return cutMsgpackStr(b)
	}
	if n > uint64(len(b)) {
		return nil, nil, false
	}
	return b[:n], b[n:], true
}

// skipMsgpackValue skips one well-formed msgpack value at the front of b,
// iteratively (a peer chooses the nesting), at most 256 levels deep.
func skipMsgpackValue(b []byte) ([]byte, bool) {
	n, err := msgpackcheck.Len(b)
	if err != nil {
		return nil, false
	}
	return b[n:], true
}

// appendMsgpackStr appends s as the shortest msgpack string.
func appendMsgpackStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n <= 0xff:
		b = append(b, 0xd9, byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

// appendMsgpackBin appends s as the shortest msgpack binary.
func appendMsgpackBin(b []byte, s string) []byte {
	switch n := len(s); {
	case n <= 0xff:
		b = append(b, 0xc4, byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, 0xc5), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xc6), uint32(n))
	}
	return append(b, s...)
}

// appendMsgpackMapLen appends the shortest msgpack map header for n entries.
func appendMsgpackMapLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x80|byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 0xde), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xdf), uint32(n))
	}
}

// methodInterner keeps one copy of each short method name a connection
// receives, so routing a request allocates nothing for its name. It is
// owned by the connection's reader goroutine. It holds at most
// maxInternedMethods names; others are allocated each time.
type methodInterner map[string]string

func (mi *methodInterner) intern(b []byte) string {
	if s, ok := (*mi)[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(b) <= maxInternedMethodSz && len(*mi) < maxInternedMethods {
		if *mi == nil {
			*mi = make(methodInterner)
		}
		(*mi)[s] = s
	}
	return s
}
