package syrup

import (
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"math/big"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Limits bound what decoding one value may take. A zero field takes its
// default.
type Limits struct {
	// MaxDepth is how many containers (lists, dictionaries, records,
	// sets) may be open at once. Default DefaultMaxDepth.
	MaxDepth int
	// MaxBytes is the largest encoding of one value, in octets; a stream
	// decoder holds at most this much of a value it is reading. Default
	// DefaultMaxBytes.
	MaxBytes int
	// MaxValues is how many values one value may hold, itself and every
	// container, atom, key and member in it. Decoded, a value costs up to
	// about a hundred bytes beyond its octets, so this bounds the memory
	// a small input can claim. Default DefaultMaxValues.
	MaxValues int
	// MaxIntDigits is the most decimal digits of one integer. Default
	// DefaultMaxIntDigits.
	MaxIntDigits int
}

// The defaults of Limits.
const (
	DefaultMaxDepth     = 128
	DefaultMaxBytes     = 4 << 20
	DefaultMaxValues    = 1 << 16
	DefaultMaxIntDigits = 1024
)

func (l Limits) withDefaults() Limits {
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxValues <= 0 {
		l.MaxValues = DefaultMaxValues
	}
	if l.MaxIntDigits <= 0 {
		l.MaxIntDigits = DefaultMaxIntDigits
	}
	return l
}

// Unmarshal decodes data, which must hold exactly one canonical Syrup
// value, within the default Limits.
func Unmarshal(data []byte) (any, error) { return UnmarshalWithin(data, Limits{}) }

// UnmarshalWithin is Unmarshal within limits.
func UnmarshalWithin(data []byte, limits Limits) (any, error) {
	p := parser{buf: data, lim: limits.withDefaults()}
	v, err := p.value()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if p.pos != len(data) {
		return nil, p.syntax(p.pos, "bytes after the value")
	}
	return v, nil
}

// Decoder reads Syrup values from a stream, one after another, each
// within its Limits.
type Decoder struct {
	p   parser
	raw []byte // the last value's encoding, in p.buf
}

// NewDecoder returns a Decoder that reads from r within limits (zero
// fields take their defaults). It may read ahead of the value it returns.
func NewDecoder(r io.Reader, limits Limits) *Decoder {
	return &Decoder{p: parser{r: r, lim: limits.withDefaults()}}
}

// Decode reads the next value. At the end of the stream, before any octet
// of a value, it returns io.EOF; within one, io.ErrUnexpectedEOF. After
// any other error the stream is not at a value's boundary, and the
// Decoder should not be used again.
func (d *Decoder) Decode() (any, error) {
	p := &d.p
	// Drop the previous value's octets, keeping what was read ahead.
	n := copy(p.buf, p.buf[p.pos:])
	p.buf, p.base, p.pos = p.buf[:n], p.base+int64(p.pos), 0
	if cap(p.buf) > 64<<10 && n < 4<<10 {
		p.buf = append([]byte(nil), p.buf...) // let a large value's buffer go
	}
	d.raw = nil
	v, err := p.value()
	if err != nil {
		if err == io.EOF && p.pos > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	d.raw = p.buf[:p.pos:p.pos]
	return v, nil
}

// Raw returns the encoding of the value Decode last returned, valid until
// the next Decode: what a signature over the value covers.
func (d *Decoder) Raw() []byte { return d.raw }

// parser decodes one value from buf (and, for a stream, r), iteratively.
type parser struct {
	r    io.Reader // nil: buf is all the input
	buf  []byte    // input; for a stream, the current value's octets and what was read ahead
	pos  int       // next octet in buf
	base int64     // offset in the stream of buf[0]
	lim  Limits
	err  error // a read error met by fill
}

// frame is a container being read.
type frame struct {
	kind    byte // '[', '{', '<' or '#'
	start   int  // offset in buf of its opening octet
	items   []any
	dict    Dict
	key     any
	haveKey bool   // a dictionary: key read, its value next
	prev    [2]int // the previous key's or member's encoding, as offsets in buf; prev[1] == 0: none yet
}

func (p *parser) syntax(at int, msg string) error {
	return &SyntaxError{Offset: p.base + int64(at), Msg: msg}
}

func (p *parser) limit(at int, name string, value int) error {
	return &LimitError{Limit: name, Value: value, Offset: p.base + int64(at)}
}

// fill makes at least n octets available from pos, reading as they
// arrive (never allocating ahead of them), or returns io.EOF or the read
// error. n must be within the byte budget already.
func (p *parser) fill(n int) error {
	for len(p.buf)-p.pos < n {
		if p.r == nil {
			return io.EOF
		}
		if p.err != nil {
			return p.err
		}
		if len(p.buf) == cap(p.buf) {
			p.buf = slices.Grow(p.buf, max(4<<10, len(p.buf)))
		}
		m, err := p.r.Read(p.buf[len(p.buf):cap(p.buf)])
		p.buf = p.buf[:len(p.buf)+m]
		if err != nil {
			p.err = err
		}
	}
	return nil
}

// claim checks that n more octets from pos stay within MaxBytes, then
// makes them available.
func (p *parser) claim(n int) error {
	if n > p.lim.MaxBytes-p.pos {
		return p.limit(p.pos, "MaxBytes", p.lim.MaxBytes)
	}
	return p.fill(n)
}

// value decodes one whole value starting at pos.
func (p *parser) value() (any, error) {
	var (
		stack  []*frame
		values int
	)
	for {
		if err := p.claim(1); err != nil {
			return nil, err
		}
		start := p.pos
		c := p.buf[p.pos]
		var v any
		if n := len(stack); n > 0 && c == closer(stack[n-1].kind) {
			f := stack[n-1]
			p.pos++
			var err error
			if v, err = p.close(f); err != nil {
				return nil, err
			}
			stack = stack[:n-1]
			start = f.start
		} else {
			if values++; values > p.lim.MaxValues {
				return nil, p.limit(start, "MaxValues", p.lim.MaxValues)
			}
			switch c {
			case '[', '{', '<', '#':
				if len(stack) >= p.lim.MaxDepth {
					return nil, p.limit(start, "MaxDepth", p.lim.MaxDepth)
				}
				p.pos++
				stack = append(stack, &frame{kind: c, start: start})
				continue
			}
			var err error
			if v, err = p.atom(c); err != nil {
				return nil, err
			}
		}
		if len(stack) == 0 {
			return v, nil
		}
		if err := p.add(stack[len(stack)-1], v, start); err != nil {
			return nil, err
		}
	}
}

// closer returns the octet that ends a container opened by kind.
func closer(kind byte) byte {
	switch kind {
	case '[':
		return ']'
	case '{':
		return '}'
	case '<':
		return '>'
	default:
		return '$'
	}
}

// close ends container f, whose closing octet has been read.
func (p *parser) close(f *frame) (any, error) {
	switch f.kind {
	case '[':
		if f.items == nil {
			return []any{}, nil
		}
		return f.items, nil
	case '{':
		if f.haveKey {
			return nil, p.syntax(p.pos-1, "dictionary ends after a key, before its value")
		}
		if f.dict == nil {
			return Dict{}, nil
		}
		return f.dict, nil
	case '<':
		if len(f.items) == 0 {
			return nil, p.syntax(p.pos-1, "record without a label")
		}
		return Record{Label: f.items[0], Fields: f.items[1:len(f.items):len(f.items)]}, nil
	default:
		if f.items == nil {
			return Set{}, nil
		}
		return Set(f.items), nil
	}
}

// add puts v, whose encoding is buf[start:pos], into container f.
func (p *parser) add(f *frame, v any, start int) error {
	switch f.kind {
	case '{':
		if f.haveKey {
			f.dict = append(f.dict, Entry{Key: f.key, Value: v})
			f.key, f.haveKey = nil, false
			return nil
		}
		if err := p.ascending(f, start, "dictionary keys"); err != nil {
			return err
		}
		f.key, f.haveKey = v, true
	case '#':
		if err := p.ascending(f, start, "set members"); err != nil {
			return err
		}
		f.items = append(f.items, v)
	default:
		f.items = append(f.items, v)
	}
	return nil
}

// ascending checks that the encoding buf[start:pos] comes strictly after
// the previous key or member of f, and makes it the previous one.
func (p *parser) ascending(f *frame, start int, what string) error {
	if f.prev[1] > 0 && bytes.Compare(p.buf[f.prev[0]:f.prev[1]], p.buf[start:p.pos]) >= 0 {
		return p.syntax(start, what+" not in strictly ascending order (not canonical, or repeated)")
	}
	f.prev = [2]int{start, p.pos}
	return nil
}

// atom decodes a value that is not a container; c is its first octet.
func (p *parser) atom(c byte) (any, error) {
	start := p.pos
	switch {
	case c == 't' || c == 'f':
		p.pos++
		return c == 't', nil
	case c == 'F':
		if err := p.claim(5); err != nil {
			return nil, err
		}
		v := math.Float32frombits(binary.BigEndian.Uint32(p.buf[p.pos+1:]))
		p.pos += 5
		return v, nil
	case c == 'D':
		if err := p.claim(9); err != nil {
			return nil, err
		}
		v := math.Float64frombits(binary.BigEndian.Uint64(p.buf[p.pos+1:]))
		p.pos += 9
		return v, nil
	case c >= '0' && c <= '9':
		return p.digits()
	}
	return nil, p.syntax(start, "octet "+strconv.QuoteRune(rune(c))+" starts no value")
}

// digits decodes an integer, or a byte string, string or symbol whose
// length comes first.
func (p *parser) digits() (any, error) {
	start := p.pos
	// Read the digits and the marker after them: no more than an integer
	// may have, or a length.
	most := max(p.lim.MaxIntDigits, 20)
	for {
		if p.pos-start > most {
			return nil, p.limit(start, "MaxIntDigits", p.lim.MaxIntDigits)
		}
		if err := p.claim(1); err != nil {
			return nil, err
		}
		if c := p.buf[p.pos]; c < '0' || c > '9' {
			break
		}
		p.pos++
	}
	digits := p.buf[start:p.pos]
	marker := p.buf[p.pos]
	if len(digits) > 1 && digits[0] == '0' {
		return nil, p.syntax(start, "leading zero")
	}
	switch marker {
	case '+', '-':
		if len(digits) > p.lim.MaxIntDigits {
			return nil, p.limit(start, "MaxIntDigits", p.lim.MaxIntDigits)
		}
		p.pos++
		return p.integer(digits, marker == '-', start)
	case ':', '"', '\'':
	default:
		return nil, p.syntax(p.pos, "digits followed by "+strconv.QuoteRune(rune(marker)))
	}
	n, err := strconv.Atoi(string(digits))
	if err != nil || n > p.lim.MaxBytes {
		return nil, p.limit(start, "MaxBytes", p.lim.MaxBytes)
	}
	p.pos++
	if err := p.claim(n); err != nil {
		return nil, err
	}
	body := p.buf[p.pos : p.pos+n]
	p.pos += n
	switch marker {
	case ':':
		return bytes.Clone(body), nil
	case '"':
		if !utf8.Valid(body) {
			return nil, p.syntax(start, "string is not valid UTF-8")
		}
		return string(body), nil
	default:
		if !utf8.Valid(body) {
			return nil, p.syntax(start, "symbol is not valid UTF-8")
		}
		return Symbol(body), nil
	}
}

// integer converts canonical decimal digits to an int64, or a *big.Int
// if it does not fit.
func (p *parser) integer(digits []byte, negative bool, start int) (any, error) {
	if negative && len(digits) == 1 && digits[0] == '0' {
		return nil, p.syntax(start, "negative zero")
	}
	if len(digits) <= 18 { // fits an int64 whatever the digits
		n, _ := strconv.ParseInt(string(digits), 10, 64)
		if negative {
			n = -n
		}
		return n, nil
	}
	b, ok := new(big.Int).SetString(string(digits), 10)
	if !ok {
		return nil, p.syntax(start, "bad integer") // cannot happen: only digits
	}
	if negative {
		b.Neg(b)
	}
	if b.IsInt64() {
		return b.Int64(), nil
	}
	return b, nil
}
