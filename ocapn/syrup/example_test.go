package syrup_test

import (
	"fmt"
	"io"
	"strings"

	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// An OCapN-style message, encoded canonically: the dictionary's keys come
// out sorted, whatever their order in the Dict.
func ExampleMarshal() {
	msg := syrup.Record{Label: syrup.Symbol("op:deliver-only"), Fields: []any{
		int64(0),
		[]any{syrup.Symbol("greet"), "Alice", syrup.Dict{
			{Key: syrup.Symbol("times"), Value: 2},
			{Key: syrup.Symbol("loud"), Value: true},
		}},
	}}
	b, err := syrup.Marshal(msg)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s\n", b)
	// Output: <15'op:deliver-only0+[5'greet5"Alice{4'loudt5'times2+}]>
}

func ExampleUnmarshal() {
	v, err := syrup.Unmarshal([]byte(`<8'op:abort4"done>`))
	if err != nil {
		panic(err)
	}
	r := v.(syrup.Record)
	fmt.Println(r.Label, r.Fields[0])

	_, err = syrup.Unmarshal([]byte("{1+t0+f}")) // keys out of order: not canonical
	fmt.Println(err)
	// Output:
	// op:abort done
	// syrup: offset 4: dictionary keys not in strictly ascending order (not canonical, or repeated)
}

// Reading values one after another from a stream, as a netlayer carries
// them.
func ExampleDecoder() {
	d := syrup.NewDecoder(strings.NewReader("5'hello[1+2+]t"), syrup.Limits{})
	for {
		v, err := d.Decode()
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(err)
		}
		fmt.Printf("%v %q\n", v, d.Raw())
	}
	// Output:
	// hello "5'hello"
	// [1 2] "[1+2+]"
	// true "t"
}
