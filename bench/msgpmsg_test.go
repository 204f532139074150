package main

import (
	"bytes"
	"math"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// encodeLikeBokbok encodes v as the library's reflection path does: a
// msgpack Encoder with compact integers, structs as maps of their tags.
func encodeLikeBokbok(t *testing.T, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := msgpack.NewEncoder(&b)
	enc.UseCompactInts(true)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestMsgpMsgWireShape checks that msgpMsg's generated encoding is Msg's:
// the same bytes wherever msgp and the library pick the same integer form
// (Seq <= 127, or negative), and otherwise the same map read by either
// decoder into the same values (msgp writes a positive Seq over 127 in a
// signed form, the library in an unsigned one; both read either).
func TestMsgpMsgWireShape(t *testing.T) {
	data := []byte("0123456789abcdef")
	for _, seq := range []int64{0, 1, 127, -1, -32, -33, -200, -70000, math.MinInt64, 128, 300, 1<<40 + 5, math.MaxInt64} {
		want := encodeLikeBokbok(t, &Msg{Seq: seq, Data: data})
		got, err := (&msgpMsg{Seq: seq, Data: data}).MarshalMsg(nil)
		if err != nil {
			t.Fatal(err)
		}
		if (seq <= 127) != bytes.Equal(got, want) {
			t.Errorf("seq %d: msgp % x, library % x", seq, got, want)
		}
		var m Msg
		if err := msgpack.Unmarshal(got, &m); err != nil || m.Seq != seq || !bytes.Equal(m.Data, data) {
			t.Errorf("seq %d: msgp's bytes decode by reflection to %+v, %v", seq, m, err)
		}
		var mm msgpMsg
		if rest, err := mm.UnmarshalMsg(want); err != nil || len(rest) != 0 || mm.Seq != seq || !bytes.Equal(mm.Data, data) {
			t.Errorf("seq %d: the library's bytes decode with UnmarshalMsg to %+v, %d bytes left, %v", seq, mm, len(rest), err)
		}
		if refl := encodeLikeBokbok(t, &msgpMsg{Seq: seq, Data: data}); !bytes.Equal(refl, want) {
			t.Errorf("seq %d: msgpMsg by reflection % x, Msg % x", seq, refl, want)
		}
	}
}
