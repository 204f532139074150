package main

import (
	"bytes"
	"flag"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

func TestParseJSONMessageNumbers(t *testing.T) {
	got, err := parseJSONMessage(`[1, -1, 0, 1.0, 1e3, 2.5, 9223372036854775807, 9223372036854775808, 18446744073709551616, {"n": -7}]`)
	if err != nil {
		t.Fatal(err)
	}
	want := []any{int64(1), int64(-1), int64(0), 1.0, 1000.0, 2.5, int64(math.MaxInt64), uint64(1 << 63), 18446744073709551616.0, map[string]any{"n": int64(-7)}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %#v\nwant %#v", got, want)
	}
	for in, wantErr := range map[string]string{
		``:               "empty",
		`  `:             "empty",
		`{"a": 1`:        "middle",
		`{a: 1}`:         "invalid character",
		`1 2`:            "more follows",
		`1e999`:          "out of range",
		`{"a": [1e999]}`: "out of range",
	} {
		if _, err := parseJSONMessage(in); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("parseJSONMessage(%q): error %v, want one with %q", in, err, wantErr)
		}
	}
}

// The reply of a peer that is not bokbok serve may hold anything msgpack
// can: it must come out as JSON all the same.
func TestReplyJSONAnyMsgpack(t *testing.T) {
	var raw bytes.Buffer
	enc := msgpack.NewEncoder(&raw)
	enc.SetSortMapKeys(true)
	raw.WriteByte(0x89) // a map of 9 pairs, written by hand for the odd keys
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(enc.Encode(int64(1)))
	must(enc.Encode("int key"))
	must(enc.Encode(true))
	must(enc.Encode([]byte{1, 2, 3}))
	must(enc.Encode([]byte("bin key")))
	must(enc.Encode("x"))
	raw.Write([]byte{0x92, 0x01, 0x02}) // an array as a key
	must(enc.Encode(nil))
	must(enc.Encode("nan"))
	must(enc.Encode([]any{math.NaN(), math.Inf(1), math.Inf(-1), 2.0, float32(0.5), int64(-3), uint64(math.MaxUint64)}))
	must(enc.Encode("time"))
	must(enc.Encode(time.Date(2024, 5, 6, 7, 8, 9, 10, time.UTC)))
	must(enc.Encode("ext"))
	raw.Write([]byte{0xd4, 0x05, 0xff}) // fixext1 of type 5
	must(enc.Encode("nested"))
	must(enc.Encode(map[any]any{int64(2): map[any]any{false: nil}}))
	must(enc.Encode("s"))
	must(enc.Encode("text"))

	got, err := replyJSON(func(out any) error { return msgpack.Unmarshal(raw.Bytes(), out) }, "")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"1":"int key","YmluIGtleQ==":"x","[1,2]":null,"ext":{"data":"/w==","msgpack_ext":5},"nan":["NaN","+Inf","-Inf",2.0,0.5,-3,18446744073709551615],"nested":{"2":{"false":null}},"s":"text","time":"2024-05-06T07:08:09.00000001Z","true":"AQID"}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestParseInterspersed(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		pos      []string
		realm    string
		insecure bool
	}{
		{[]string{"a", "--insecure", "b"}, []string{"a", "b"}, "", true},
		{[]string{"a", "--", "-1", "--insecure"}, []string{"a", "-1", "--insecure"}, "", false},
		{[]string{"--insecure", "--", "-x", "-y"}, []string{"-x", "-y"}, "", true},
		{[]string{"--realm", "--", "a", "-", "--insecure"}, []string{"a", "-"}, "--", true},
		{[]string{"--realm=r", "--", "--realm"}, []string{"--realm"}, "r", false},
		{[]string{"a", "--", "--"}, []string{"a", "--"}, "", false},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		realm := fs.String("realm", "", "")
		insecure := fs.Bool("insecure", false, "")
		pos, err := parseInterspersed(fs, tc.args)
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if !reflect.DeepEqual(pos, tc.pos) || *realm != tc.realm || *insecure != tc.insecure {
			t.Errorf("%q: pos %q realm %q insecure %v; want %q %q %v", tc.args, pos, *realm, *insecure, tc.pos, tc.realm, tc.insecure)
		}
	}
}
