package msgpackcheck

import (
	"encoding/binary"
	"fmt"
)

// MaxDepth bounds how deeply arrays and maps may nest. The msgpack decoder
// recurses once per level, so without a bound a small, deeply nested
// message could exhaust the stack.
const MaxDepth = 256

// Estimated Go memory of decoding one item into an interface value: an
// interface slot for every item, a boxed header for strings, binaries and
// extensions (plus their bytes), a boxed slice header for arrays, and a
// map header, a first group of slots and a share of later groups for
// maps. Measured with msgpack v5 on Go 1.26 and rounded up: the worst
// case, an array of one-entry maps, is about 170 bytes per byte of input.
const (
	costItem     = 24
	costBytes    = 16 // plus the length itself
	costArray    = 32
	costMap      = 64
	costMapGroup = 288 // maps with at least one entry
	costMapEntry = 64
)

// MaxAmplification is the most Info.Decoded can be per byte checked.
const MaxAmplification = costItem + costMap + costMapGroup + costMapEntry + 2*costItem

// Info is what Check learned about a value.
type Info struct {
	// Decoded estimates, in bytes, the Go memory that decoding the value
	// into interface values takes (an upper bound for the shapes
	// measured; decoding into typed Go values takes less).
	Decoded int64

	// exts lists the payloads of the value's extensions, in order.
	exts []span
}

// span is the byte range [start, end) of an extension's payload.
type span struct{ start, end int }

// Check verifies that b holds exactly one well-formed msgpack value nested
// at most MaxDepth levels deep, in which every declared length and count
// fits in the bytes that remain, and estimates its decoded size. It does
// not recurse; it allocates only to record extension payloads.
func Check(b []byte) (Info, error) {
	info, pos, err := scan(b)
	if err == nil && pos != len(b) {
		return info, fmt.Errorf("%d bytes left after the msgpack value", len(b)-pos)
	}
	return info, err
}

// Len returns the length of the well-formed msgpack value at the front of
// b (checked as Check checks a whole value); bytes after it are allowed.
func Len(b []byte) (int, error) {
	_, n, err := scan(b)
	return n, err
}

// scan checks the value at the front of b and returns how long it is.
func scan(b []byte) (Info, int, error) {
	var info Info
	// stack[i] is the number of items still expected at depth i.
	var stackBuf [16]uint64
	stack := append(stackBuf[:0], 1)
	pos := 0
	var cost uint64
	for len(stack) > 0 {
		top := len(stack) - 1
		if stack[top] == 0 {
			stack = stack[:top]
			continue
		}
		stack[top]--
		if pos >= len(b) {
			return info, 0, fmt.Errorf("msgpack value truncated at byte %d", pos)
		}
		c := b[pos]
		pos++
		h, err := head(c, b[pos:])
		if err != nil {
			return info, 0, fmt.Errorf("msgpack byte %d: %w", pos-1, err)
		}
		if uint64(len(b)-pos) < h.skip {
			return info, 0, fmt.Errorf("msgpack byte %d: %d bytes declared, %d left", pos-1, h.skip, len(b)-pos)
		}
		cost += costItem + h.cost
		if h.ext {
			start := pos + int(h.skip-h.data)
			info.exts = append(info.exts, span{start, pos + int(h.skip)})
		}
		pos += int(h.skip)
		if h.items > 0 {
			if uint64(len(b)-pos) < h.items {
				return info, 0, fmt.Errorf("msgpack byte %d: %d items declared, %d bytes left", pos-1, h.items, len(b)-pos)
			}
			if len(stack) > MaxDepth {
				return info, 0, fmt.Errorf("msgpack nested deeper than %d levels", MaxDepth)
			}
			stack = append(stack, h.items)
		}
	}
	info.Decoded = int64(cost)
	return info, pos, nil
}

// itemHead is the head of one msgpack item.
type itemHead struct {
	skip  uint64 // bytes after the first byte that the item occupies itself (a container: its length field)
	items uint64 // for an array or map: how many items follow (2 per map entry)
	data  uint64 // for a string, binary or extension: its payload's length
	ext   bool   // an extension
	cost  uint64 // estimated decoded size beyond costItem
}

// head decodes the head of one msgpack item whose first byte is c and
// whose following bytes are rest.
func head(c byte, rest []byte) (itemHead, error) {
	switch {
	case c <= 0x7f || c >= 0xe0: // positive and negative fixint
		return itemHead{}, nil
	case c <= 0x8f: // fixmap
		return mapHead(0, uint64(c&0x0f)), nil
	case c <= 0x9f: // fixarray
		return itemHead{items: uint64(c & 0x0f), cost: costArray}, nil
	case c <= 0xbf: // fixstr
		return bytesHead(0, uint64(c&0x1f), false), nil
	}
	switch c {
	case 0xc0, 0xc2, 0xc3: // nil, false, true
		return itemHead{}, nil
	case 0xcc, 0xd0: // uint8, int8
		return itemHead{skip: 1}, nil
	case 0xcd, 0xd1: // uint16, int16
		return itemHead{skip: 2}, nil
	case 0xca, 0xce, 0xd2: // float32, uint32, int32
		return itemHead{skip: 4, cost: costBytes}, nil
	case 0xcb, 0xcf, 0xd3: // float64, uint64, int64
		return itemHead{skip: 8, cost: costBytes}, nil
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16: type byte + data
		return bytesHead(1, 1<<(c-0xd4), true), nil
	}
	// The remaining kinds have a length field of n bytes.
	var n int
	switch c {
	case 0xc4, 0xd9, 0xc7: // bin8, str8, ext8
		n = 1
	case 0xc5, 0xda, 0xc8, 0xdc, 0xde: // bin16, str16, ext16, array16, map16
		n = 2
	case 0xc6, 0xdb, 0xc9, 0xdd, 0xdf: // bin32, str32, ext32, array32, map32
		n = 4
	default:
		return itemHead{}, fmt.Errorf("0x%02x is not a msgpack type", c)
	}
	if len(rest) < n {
		return itemHead{}, fmt.Errorf("truncated length")
	}
	var l uint64
	switch n {
	case 1:
		l = uint64(rest[0])
	case 2:
		l = uint64(binary.BigEndian.Uint16(rest))
	default:
		l = uint64(binary.BigEndian.Uint32(rest))
	}
	switch c {
	case 0xc4, 0xc5, 0xc6, 0xd9, 0xda, 0xdb:
		return bytesHead(uint64(n), l, false), nil
	case 0xc7, 0xc8, 0xc9: // length, type, data
		return bytesHead(uint64(n)+1, l, true), nil
	case 0xdc, 0xdd:
		return itemHead{skip: uint64(n), items: l, cost: costArray}, nil
	default:
		return mapHead(uint64(n), l), nil
	}
}

// bytesHead is the head of a string, binary or extension: header bytes
// after the first, then length bytes of data.
func bytesHead(header, length uint64, ext bool) itemHead {
	return itemHead{skip: header + length, data: length, ext: ext, cost: costBytes + length}
}

func mapHead(skip, entries uint64) itemHead {
	h := itemHead{skip: skip, items: 2 * entries, cost: costMap + entries*costMapEntry}
	if entries > 0 {
		h.cost += costMapGroup
	}
	return h
}
