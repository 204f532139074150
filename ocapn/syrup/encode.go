package syrup

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/big"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Marshal returns the canonical Syrup encoding of v, one of the values the
// package documentation lists (any Go integer type is accepted). A Dict
// with two equal keys, a Set with two equal members, a string or Symbol
// that is not valid UTF-8, nil, and other types are refused, as is a value
// nested more than MaxEncodeDepth deep (a slice that contains itself, say).
func Marshal(v any) ([]byte, error) { return AppendValue(nil, v) }

// AppendValue appends the canonical Syrup encoding of v to b; see Marshal.
// On error it returns b as it was.
func AppendValue(b []byte, v any) ([]byte, error) {
	out, err := appendValue(b, v, 0)
	if err != nil {
		return b, err
	}
	return out, nil
}

// MaxEncodeDepth is how deeply Marshal follows nested containers.
const MaxEncodeDepth = 1000

// appendValue encodes v; values are the application's own, so recursion
// is bounded by MaxEncodeDepth only.
func appendValue(b []byte, v any, depth int) ([]byte, error) {
	if depth > MaxEncodeDepth {
		return b, fmt.Errorf("syrup: value nested more than %d deep", MaxEncodeDepth)
	}
	switch x := v.(type) {
	case bool:
		if x {
			return append(b, 't'), nil
		}
		return append(b, 'f'), nil
	case float32:
		return binary.BigEndian.AppendUint32(append(b, 'F'), math.Float32bits(x)), nil
	case float64:
		return binary.BigEndian.AppendUint64(append(b, 'D'), math.Float64bits(x)), nil
	case int:
		return appendInt(b, int64(x)), nil
	case int8:
		return appendInt(b, int64(x)), nil
	case int16:
		return appendInt(b, int64(x)), nil
	case int32:
		return appendInt(b, int64(x)), nil
	case int64:
		return appendInt(b, x), nil
	case uint:
		return appendUint(b, uint64(x)), nil
	case uint8:
		return appendUint(b, uint64(x)), nil
	case uint16:
		return appendUint(b, uint64(x)), nil
	case uint32:
		return appendUint(b, uint64(x)), nil
	case uint64:
		return appendUint(b, x), nil
	case *big.Int:
		if x == nil {
			return b, fmt.Errorf("syrup: a nil *big.Int has no encoding")
		}
		return appendBig(b, x), nil
	case []byte:
		return append(appendLen(b, len(x), ':'), x...), nil
	case string:
		if !utf8.ValidString(x) {
			return b, fmt.Errorf("syrup: string %q is not valid UTF-8", x)
		}
		return append(appendLen(b, len(x), '"'), x...), nil
	case Symbol:
		if !utf8.ValidString(string(x)) {
			return b, fmt.Errorf("syrup: symbol %q is not valid UTF-8", string(x))
		}
		return append(appendLen(b, len(x), '\''), x...), nil
	case []any:
		b = append(b, '[')
		for _, item := range x {
			var err error
			if b, err = appendValue(b, item, depth+1); err != nil {
				return b, err
			}
		}
		return append(b, ']'), nil
	case Record:
		return appendRecord(b, &x, depth)
	case *Record:
		if x == nil {
			return b, fmt.Errorf("syrup: a nil *Record has no encoding")
		}
		return appendRecord(b, x, depth)
	case Dict:
		return appendDict(b, x, depth)
	case Set:
		return appendSet(b, x, depth)
	case nil:
		return b, fmt.Errorf("syrup: nil has no encoding")
	default:
		return b, fmt.Errorf("syrup: %T has no encoding", v)
	}
}

func appendInt(b []byte, n int64) []byte {
	if n < 0 {
		// -n overflows for the smallest int64; as uint64 it does not.
		return append(strconv.AppendUint(b, uint64(-(n+1))+1, 10), '-')
	}
	return append(strconv.AppendInt(b, n, 10), '+')
}

func appendUint(b []byte, n uint64) []byte {
	return append(strconv.AppendUint(b, n, 10), '+')
}

func appendBig(b []byte, n *big.Int) []byte {
	if n.Sign() < 0 {
		return append(new(big.Int).Neg(n).Append(b, 10), '-')
	}
	return append(n.Append(b, 10), '+')
}

// appendLen appends a length and the marker that says what follows.
func appendLen(b []byte, n int, marker byte) []byte {
	return append(strconv.AppendInt(b, int64(n), 10), marker)
}

func appendRecord(b []byte, r *Record, depth int) ([]byte, error) {
	b = append(b, '<')
	var err error
	if b, err = appendValue(b, r.Label, depth+1); err != nil {
		return b, err
	}
	for _, f := range r.Fields {
		if b, err = appendValue(b, f, depth+1); err != nil {
			return b, err
		}
	}
	return append(b, '>'), nil
}

// encodedPair is a dictionary entry or set member with its key's
// encoding, for sorting.
type encodedPair struct {
	key   []byte
	value any
}

func appendDict(b []byte, d Dict, depth int) ([]byte, error) {
	pairs := make([]encodedPair, len(d))
	for i, e := range d {
		k, err := appendValue(nil, e.Key, depth+1)
		if err != nil {
			return b, err
		}
		pairs[i] = encodedPair{key: k, value: e.Value}
	}
	if err := sortUnique(pairs, "dictionary key"); err != nil {
		return b, err
	}
	b = append(b, '{')
	for _, p := range pairs {
		b = append(b, p.key...)
		var err error
		if b, err = appendValue(b, p.value, depth+1); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

func appendSet(b []byte, s Set, depth int) ([]byte, error) {
	pairs := make([]encodedPair, len(s))
	for i, m := range s {
		k, err := appendValue(nil, m, depth+1)
		if err != nil {
			return b, err
		}
		pairs[i] = encodedPair{key: k}
	}
	if err := sortUnique(pairs, "set member"); err != nil {
		return b, err
	}
	b = append(b, '#')
	for _, p := range pairs {
		b = append(b, p.key...)
	}
	return append(b, '$'), nil
}

// sortUnique sorts pairs by their encoded keys, bytewise, and refuses two
// equal ones.
func sortUnique(pairs []encodedPair, what string) error {
	slices.SortFunc(pairs, func(x, y encodedPair) int { return bytes.Compare(x.key, y.key) })
	for i := 1; i < len(pairs); i++ {
		if bytes.Equal(pairs[i-1].key, pairs[i].key) {
			return fmt.Errorf("syrup: two equal %ss (%q)", what, pairs[i].key)
		}
	}
	return nil
}

// Encoder writes Syrup values to a stream, one after another, as OCapN's
// netlayers carry them.
type Encoder struct {
	w   io.Writer
	buf []byte
}

// NewEncoder returns an Encoder that writes to w.
func NewEncoder(w io.Writer) *Encoder { return &Encoder{w: w} }

// Encode writes the canonical encoding of v (see Marshal) in one Write.
func (e *Encoder) Encode(v any) error {
	b, err := AppendValue(e.buf[:0], v)
	if err != nil {
		return err
	}
	e.buf = b
	if cap(e.buf) > 64<<10 {
		e.buf = nil // do not keep a large message's buffer
	}
	_, err = e.w.Write(b)
	return err
}
