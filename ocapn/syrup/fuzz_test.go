package syrup

import (
	"bytes"
	"testing"
	"testing/iotest"
)

var fuzzSeeds = []string{
	zooBin, "t", "0+", "5-", "3:cat", "4\"bear", "5'fetch", "[1+2+3+]", "{3:age30+4:name5:Alice7:isAlivet}",
	"<6:person5:Alice30+t>", "#1+2+3+$", "D\x40\x20\x66\x66\x66\x66\x66\x66", "F\x3f\xc0\x00\x00",
	"1180591620717411303424-", "<10'op:deliver<10'desc:export1+>[3'hi]0+f>", "[[[[]]]]", "{0+t1+f}",
	"01+", "0-", "{1+t0+f}", "#1+1+$", "<>", "2\"\xff\xfe", "99999999999999999999:x",
}

// FuzzUnmarshal: decoding never panics, and whatever decodes encodes back
// to exactly the input (decoding accepts only canonical Syrup). Decoding
// the input as a stream, one octet at a time, agrees.
func FuzzUnmarshal(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	lim := Limits{MaxDepth: 64, MaxBytes: 1 << 16, MaxValues: 4096, MaxIntDigits: 64}
	f.Fuzz(func(t *testing.T, in []byte) {
		v, err := UnmarshalWithin(in, lim)
		d := NewDecoder(iotest.OneByteReader(bytes.NewReader(in)), lim)
		sv, serr := d.Decode()
		if err != nil {
			if serr == nil && len(d.Raw()) == len(in) {
				t.Fatalf("%q: Unmarshal failed (%v), the stream decoder did not", in, err)
			}
			return
		}
		out, merr := Marshal(v)
		if merr != nil {
			t.Fatalf("%q decoded to %#v, which does not encode: %v", in, v, merr)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("%q decoded and encoded back as %q", in, out)
		}
		if serr != nil || !bytes.Equal(d.Raw(), in) || !Equal(v, sv) {
			t.Fatalf("%q: the stream decoder gave %#v, %v", in, sv, serr)
		}
	})
}
