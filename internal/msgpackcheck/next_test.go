package msgpackcheck

import "testing"

func TestReaderNext(t *testing.T) {
	var r Reader
	buf := []byte("abcdef")
	r.Reset(buf, Info{})
	if c, _ := r.ReadByte(); c != 'a' {
		t.Fatalf("ReadByte = %q", c)
	}
	b, ok := r.Next(3)
	if !ok || string(b) != "bcd" || cap(b) != 3 || &b[0] != &buf[1] {
		t.Fatalf("Next(3) = %q, %v (cap %d): want the reader's own bytes bcd, capacity 3", b, ok, cap(b))
	}
	for _, n := range []int{3, -1} {
		if b, ok := r.Next(n); ok || b != nil {
			t.Fatalf("Next(%d) with 2 left = %q, %v: want nothing", n, b, ok)
		}
	}
	if r.Len() != 2 {
		t.Fatalf("a refused Next read something: %d left", r.Len())
	}
}
