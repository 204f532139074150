package msgpackcheck

import (
	"testing"
)

// FuzzDecode: whatever the bytes, checking and decoding them into a map,
// a slice, a struct or an interface never panics, never recurses without
// bound, and never allocates far beyond the estimate.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"\xd7\xff\xdf0000000", "\xd7\r\xdf0000000", // msgpack v5 read these ext payloads as map headers
		"\x81\xa1a\x01", "\x92\xc0\xd6\xff\x00\x00\x00\x01", "\xc7\x00\x05", "\x91\x91\x91\xc0",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := Check(b)
		if err != nil {
			return
		}
		var m map[string]any
		_ = Decode(b, &m)
		var mi map[int]map[string][]int
		_ = Decode(b, &mi)
		var s []map[string]any
		_ = Decode(b, &s)
		var st struct {
			A map[string]any `msgpack:"a"`
			B []string       `msgpack:"b"`
		}
		_ = Decode(b, &st)
		var v any
		_ = Decode(b, &v)
		if len(b) < 1<<16 {
			if used := measureDecode(b); used > info.Decoded+1<<16 {
				t.Fatalf("decoding % x took %d bytes, estimate %d", b, used, info.Decoded)
			}
		}
	})
}
