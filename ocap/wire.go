package ocap

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/bokbok-go/bokbok/internal/msgpackcheck"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// Capability messages are bokbok notifications whose message is a msgpack
// array starting with an operation name (PROTOCOL.md §19.4):
//
//	["op:deliver", to, method, args, refs, question|nil]
//	["op:return",  question, value, refs]
//	["op:break",   question, code, message]
//	["op:finish",  question]
//	["op:release", export, count]
//	["op:abort",   reason]
const (
	opDeliver = "op:deliver"
	opReturn  = "op:return"
	opBreak   = "op:break"
	opFinish  = "op:finish"
	opRelease = "op:release"
	opAbort   = "op:abort"
)

// desc names an object in a capability message, from the sender's point of
// view. It travels as [kind, id].
type desc struct {
	kind uint8
	id   uint64
}

const (
	descMyExport   = 1 // the sender's export id; the receiver imports it
	descYourExport = 2 // the receiver's own export id
	descYourAnswer = 3 // the receiver's answer to question id
)

// opWriter builds one capability message.
type opWriter struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

func newOp(op string, fields int) *opWriter {
	w := &opWriter{}
	w.enc = msgpack.NewEncoder(&w.buf)
	w.enc.UseCompactInts(true)
	_ = w.enc.EncodeArrayLen(fields + 1)
	_ = w.enc.EncodeString(op)
	return w
}

// Writes to a bytes.Buffer cannot fail, so these ignore errors.
func (w *opWriter) uint(n uint64) *opWriter { _ = w.enc.EncodeUint(n); return w }
func (w *opWriter) str(s string) *opWriter  { _ = w.enc.EncodeString(s); return w }
func (w *opWriter) nil() *opWriter          { _ = w.enc.EncodeNil(); return w }
func (w *opWriter) raw(b []byte) *opWriter  { w.buf.Write(b); return w }
func (w *opWriter) desc(d desc) *opWriter {
	_ = w.enc.EncodeArrayLen(2)
	return w.uint(uint64(d.kind)).uint(d.id)
}
func (w *opWriter) bytes() []byte { return w.buf.Bytes() }
func (w *opWriter) descs(ds []desc) *opWriter {
	_ = w.enc.EncodeArrayLen(len(ds))
	for _, d := range ds {
		w.desc(d)
	}
	return w
}

// capOp reports whether a message is a capability message, and its
// operation. Anything else belongs to the application. A message that is
// not well-formed msgpack but starts like a capability message is one
// (the session refuses it).
func capOp(raw []byte) (string, bool) {
	dec, err := msgpackcheck.NewDecoder(raw)
	if err != nil {
		op := opName(raw)
		return op, strings.HasPrefix(op, "op:")
	}
	n, err := dec.DecodeArrayLen()
	if err != nil || n < 1 {
		return "", false
	}
	op, err := dec.DecodeString()
	if err != nil || !strings.HasPrefix(op, "op:") {
		return "", false
	}
	return op, true
}

// opReader reads the fields of one capability message.
type opReader struct {
	op     string
	fields int
	dec    *msgpack.Decoder
	err    error
}

func newOpReader(raw []byte) *opReader {
	r := &opReader{}
	r.dec, r.err = msgpackcheck.NewDecoder(raw)
	if r.err != nil {
		r.op = opName(raw)
		return r
	}
	n, err := r.dec.DecodeArrayLen()
	if err != nil {
		r.err = err
		return r
	}
	r.fields = n - 1
	r.op, r.err = r.dec.DecodeString()
	return r
}

// opName returns the operation name of a message that is not well-formed
// msgpack, if it starts with a short array and string, for error reports.
func opName(raw []byte) string {
	if len(raw) < 2 || raw[0]&0xf0 != 0x90 || raw[0] == 0x90 || raw[1]&0xe0 != 0xa0 {
		return ""
	}
	n := int(raw[1] & 0x1f)
	if len(raw) < 2+n {
		return ""
	}
	return string(raw[2 : 2+n])
}

// want checks the number of fields.
func (r *opReader) want(n int) {
	if r.err == nil && r.fields != n {
		r.err = fmt.Errorf("%s has %d fields, want %d", r.op, r.fields, n)
	}
}

func (r *opReader) uint() uint64 {
	if r.err != nil {
		return 0
	}
	var n uint64
	n, r.err = r.dec.DecodeUint64()
	return n
}

func (r *opReader) str() string {
	if r.err != nil {
		return ""
	}
	var s string
	s, r.err = r.dec.DecodeString()
	return s
}

// optUint reads a uint or nil.
func (r *opReader) optUint() (uint64, bool) {
	if r.err != nil {
		return 0, false
	}
	c, err := r.dec.PeekCode()
	if err != nil {
		r.err = err
		return 0, false
	}
	if c == msgpcode.Nil {
		r.err = r.dec.DecodeNil()
		return 0, false
	}
	return r.uint(), true
}

func (r *opReader) raw() []byte {
	if r.err != nil {
		return nil
	}
	var b msgpack.RawMessage
	b, r.err = r.dec.DecodeRaw()
	return b
}

func (r *opReader) desc() desc {
	if r.err != nil {
		return desc{}
	}
	n, err := r.dec.DecodeArrayLen()
	if err != nil || n != 2 {
		r.err = errors.New("a descriptor must be [kind, id]")
		return desc{}
	}
	k := r.uint()
	id := r.uint()
	if r.err == nil && (k < descMyExport || k > descYourAnswer) {
		r.err = fmt.Errorf("descriptor kind %d", k)
	}
	return desc{kind: uint8(k), id: id}
}

// descs reads a list of at most max descriptors; a longer one is an
// error, found before anything is made for it.
func (r *opReader) descs(max int) []desc {
	if r.err != nil {
		return nil
	}
	n, err := r.dec.DecodeArrayLen()
	if err != nil {
		r.err = err
		return nil
	}
	if n < 0 {
		return nil
	}
	if n > max {
		r.err = fmt.Errorf("%d references in one message, more than %d (Node.MaxDescriptorsPerMessage)", n, max)
		return nil
	}
	ds := make([]desc, 0, min(n, 64))
	for i := 0; i < n && r.err == nil; i++ {
		ds = append(ds, r.desc())
	}
	return ds
}
