package msgpackcheck

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// NewDecoder checks b (see Check) and returns a decoder over it that reads
// through a Reader. Maps and numbers decoded into interface values become
// map[string]any, int64, uint64 and float64 (loose interface decoding).
func NewDecoder(b []byte) (*msgpack.Decoder, error) {
	info, err := Check(b)
	if err != nil {
		return nil, err
	}
	r := &Reader{}
	r.Reset(b, info)
	d := msgpack.NewDecoder(r)
	d.UseLooseInterfaceDecoding(true)
	// Every declared length fits in the bytes checked, so slices can be
	// allocated whole rather than grown 1 MiB at a time.
	d.DisableAllocLimit(true)
	return d, nil
}

// Decode checks b and decodes it, whole, into out (a pointer).
func Decode(b []byte, out any) error {
	d, err := NewDecoder(b)
	if err != nil {
		return err
	}
	if err := d.Decode(out); err != nil {
		return err
	}
	if n := d.Buffered().(*Reader).Len(); n != 0 {
		return fmt.Errorf("%d bytes left after the msgpack value", n)
	}
	return nil
}
