package bokbok

import (
	"encoding/binary"
	"fmt"
)

// maxNesting bounds how deeply arrays and maps may nest in a message. The
// msgpack decoder recurses once per level, so without a bound a small,
// deeply nested message from a peer could exhaust the stack.
const maxNesting = 256

// checkMsgpack verifies, without allocating and without recursion, that b
// holds exactly one well-formed msgpack value nested at most maxNesting
// deep, and that every length and count it declares fits in the bytes that
// remain. Only such bytes are handed to the msgpack decoder, whose
// allocations are then bounded by the message's size.
func checkMsgpack(b []byte) error {
	// stack[i] is the number of items still expected at depth i.
	var stackBuf [16]uint64
	stack := append(stackBuf[:0], 1)
	pos := 0
	for len(stack) > 0 {
		top := len(stack) - 1
		if stack[top] == 0 {
			stack = stack[:top]
			continue
		}
		stack[top]--
		if pos >= len(b) {
			return fmt.Errorf("msgpack value truncated at byte %d", pos)
		}
		c := b[pos]
		pos++
		skip, items, err := msgpackHead(c, b[pos:])
		if err != nil {
			return fmt.Errorf("msgpack byte %d: %w", pos-1, err)
		}
		if uint64(len(b)-pos) < skip {
			return fmt.Errorf("msgpack byte %d: %d bytes declared, %d left", pos-1, skip, len(b)-pos)
		}
		pos += int(skip)
		if items > 0 {
			if uint64(len(b)-pos) < items {
				return fmt.Errorf("msgpack byte %d: %d items declared, %d bytes left", pos-1, items, len(b)-pos)
			}
			if len(stack) > maxNesting {
				return fmt.Errorf("msgpack nested deeper than %d levels", maxNesting)
			}
			stack = append(stack, items)
		}
	}
	if pos != len(b) {
		return fmt.Errorf("%d bytes left after the msgpack value", len(b)-pos)
	}
	return nil
}

// msgpackHead decodes the head of one msgpack item whose first byte is c
// and whose following bytes are rest. It returns how many bytes after c the
// item occupies itself (for a container: just its length field) and, for
// an array or map, how many items follow it (2 per map entry).
func msgpackHead(c byte, rest []byte) (skip, items uint64, err error) {
	// length reads an n-byte big-endian length field at the front of rest.
	length := func(n int) (uint64, error) {
		if len(rest) < n {
			return 0, fmt.Errorf("truncated length")
		}
		switch n {
		case 1:
			return uint64(rest[0]), nil
		case 2:
			return uint64(binary.BigEndian.Uint16(rest)), nil
		default:
			return uint64(binary.BigEndian.Uint32(rest)), nil
		}
	}
	switch {
	case c <= 0x7f || c >= 0xe0: // positive and negative fixint
		return 0, 0, nil
	case c <= 0x8f: // fixmap
		return 0, 2 * uint64(c&0x0f), nil
	case c <= 0x9f: // fixarray
		return 0, uint64(c & 0x0f), nil
	case c <= 0xbf: // fixstr
		return uint64(c & 0x1f), 0, nil
	}
	switch c {
	case 0xc0, 0xc2, 0xc3: // nil, false, true
		return 0, 0, nil
	case 0xcc, 0xd0: // uint8, int8
		return 1, 0, nil
	case 0xcd, 0xd1: // uint16, int16
		return 2, 0, nil
	case 0xca, 0xce, 0xd2: // float32, uint32, int32
		return 4, 0, nil
	case 0xcb, 0xcf, 0xd3: // float64, uint64, int64
		return 8, 0, nil
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16: type byte + data
		return 1 + 1<<(c-0xd4), 0, nil
	case 0xc4, 0xd9: // bin8, str8
		n, err := length(1)
		return 1 + n, 0, err
	case 0xc5, 0xda: // bin16, str16
		n, err := length(2)
		return 2 + n, 0, err
	case 0xc6, 0xdb: // bin32, str32
		n, err := length(4)
		return 4 + n, 0, err
	case 0xc7: // ext8: length, type, data
		n, err := length(1)
		return 2 + n, 0, err
	case 0xc8: // ext16
		n, err := length(2)
		return 3 + n, 0, err
	case 0xc9: // ext32
		n, err := length(4)
		return 5 + n, 0, err
	case 0xdc: // array16
		n, err := length(2)
		return 2, n, err
	case 0xdd: // array32
		n, err := length(4)
		return 4, n, err
	case 0xde: // map16
		n, err := length(2)
		return 2, 2 * n, err
	case 0xdf: // map32
		n, err := length(4)
		return 4, 2 * n, err
	}
	return 0, 0, fmt.Errorf("0x%02x is not a msgpack type", c)
}
