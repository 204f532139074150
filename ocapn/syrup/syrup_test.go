package syrup

import (
	"bytes"
	"errors"
	"io"
	"math"
	"math/big"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// zooBin is the draft specification's test vector (test-data/zoo.bin in
// the Syrup repository): a record of lists, dictionaries, sets, strings,
// symbols, byte strings, integers, doubles and booleans.
const zooBin = "<3:zoo19\"The Grand Menagerie[{3'age12+4'eats#4:fish4:mice6:kibble$4'name7\"Tabatha6'alive?t6'weightD@ ffffff7'species3:cat}{3'age6+4'eats#7:bananas7:insects$4'name6\"George6'alive?f6'weightD@1=p\xa3\xd7\x0a=7'species6:monkey}{3'age12-4'eats#$4'name6\"Casper6'alive?f6'weightD\xc0A@\x00\x00\x00\x00\x007'species5:ghost}]>"

func zooValue() any {
	animal := func(species string, name string, age int64, weight float64, alive bool, eats ...string) Dict {
		food := Set{}
		for _, f := range eats {
			food = append(food, []byte(f))
		}
		return Dict{
			{Symbol("species"), []byte(species)},
			{Symbol("name"), name},
			{Symbol("age"), age},
			{Symbol("weight"), weight},
			{Symbol("alive?"), alive},
			{Symbol("eats"), food},
		}
	}
	return Record{Label: []byte("zoo"), Fields: []any{
		"The Grand Menagerie",
		[]any{
			animal("cat", "Tabatha", 12, 8.2, true, "mice", "fish", "kibble"),
			animal("monkey", "George", 6, 17.24, false, "bananas", "insects"),
			animal("ghost", "Casper", -12, -34.5, false),
		},
	}}
}

func TestZooVector(t *testing.T) {
	got, err := Marshal(zooValue())
	require.NoError(t, err)
	assert.Equal(t, zooBin, string(got))
	v, err := Unmarshal([]byte(zooBin))
	require.NoError(t, err)
	assert.True(t, Equal(zooValue(), v), "decoded: %#v", v)
	again, err := Marshal(v)
	require.NoError(t, err)
	assert.Equal(t, zooBin, string(again))
}

// TestSpecificationExamples: every example of the draft, both ways.
func TestSpecificationExamples(t *testing.T) {
	big70 := new(big.Int).Lsh(big.NewInt(1), 70)
	for _, tc := range []struct {
		name    string
		value   any
		encoded string
		decoded any // what decoding gives, if not value
	}{
		{"true", true, "t", nil},
		{"false", false, "f", nil},
		{"zero", 0, "0+", int64(0)},
		{"72", 72, "72+", int64(72)},
		{"-5", -5, "5-", int64(-5)},
		{"int64 max", int64(math.MaxInt64), "9223372036854775807+", nil},
		{"int64 min", int64(math.MinInt64), "9223372036854775808-", nil},
		{"uint64 max", uint64(math.MaxUint64), "18446744073709551615+", new(big.Int).SetUint64(math.MaxUint64)},
		{"2^70", big70, "1180591620717411303424+", nil},
		{"-2^70", new(big.Int).Neg(big70), "1180591620717411303424-", nil},
		{"a big int that fits", big.NewInt(-7), "7-", int64(-7)},
		{"bytes", []byte("cat"), "3:cat", nil},
		{"empty bytes", []byte{}, "0:", nil},
		{"string", "bear", "4\"bear", nil},
		{"string, two octets", "björn", "6\"björn", nil},
		{"string, three octets", "熊", "3\"熊", nil},
		{"symbol", Symbol("fetch"), "5'fetch", nil},
		{"symbol, two octets", Symbol("hämta"), "6'hämta", nil},
		{"dictionary, sorted", Dict{{[]byte("name"), []byte("Alice")}, {[]byte("age"), 30}, {[]byte("isAlive"), true}},
			"{3:age30+4:name5:Alice7:isAlivet}",
			Dict{{[]byte("age"), int64(30)}, {[]byte("name"), []byte("Alice")}, {[]byte("isAlive"), true}}},
		{"sequence", []any{1, 2, 3}, "[1+2+3+]", []any{int64(1), int64(2), int64(3)}},
		{"empty sequence", []any{}, "[]", nil},
		{"record", Record{Label: []byte("person"), Fields: []any{[]byte("Alice"), 30, true}}, "<6:person5:Alice30+t>",
			Record{Label: []byte("person"), Fields: []any{[]byte("Alice"), int64(30), true}}},
		{"record, symbol label, no fields", Record{Label: Symbol("op:abort")}, "<8'op:abort>", Record{Label: Symbol("op:abort"), Fields: []any{}}},
		{"set, sorted", Set{3, 2, 1}, "#1+2+3+$", Set{int64(1), int64(2), int64(3)}},
		{"double", 8.2, "D\x40\x20\x66\x66\x66\x66\x66\x66", nil},
		{"float", float32(1.5), "F\x3f\xc0\x00\x00", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Marshal(tc.value)
			require.NoError(t, err)
			assert.Equal(t, tc.encoded, string(got))
			want := tc.decoded
			if want == nil {
				want = tc.value
			}
			v, err := Unmarshal([]byte(tc.encoded))
			require.NoError(t, err)
			assert.Equal(t, want, v)
		})
	}
}

// TestNonCanonicalInputIsRefused: input that is not the one encoding of
// its value is a *SyntaxError, so that what a peer signs and what we
// check are the same octets.
func TestNonCanonicalInputIsRefused(t *testing.T) {
	for _, in := range []string{
		"", " t", "t ", "tt", "x", "]", "}", ">", "$", "[", "[1+", "{", "<", "#",
		"01+", "00+", "0-", "01:a", "1", "12", "3:ca", "3\"ca", "5'fetc",
		"F\x00\x00", "D\x00",
		"{1+t0+f}", "{0+t0+f}", "{0+}", "{0+t1+}", "#2+1+$", "#1+1+$",
		"<>", "[1+ 2+]", "(1+2+)", "d1:a1:be", "l1+e",
		"2\"\xff\xfe", "1'\x80", "3\"\xe7\x86",
		"12a", "99999999999999999999999:x",
	} {
		_, err := Unmarshal([]byte(in))
		if !assert.Error(t, err, "%q", in) {
			continue
		}
		var se *SyntaxError
		if !errors.As(err, &se) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrLimit) {
			t.Errorf("%q: %v is neither a syntax error, a limit nor a short input", in, err)
		}
	}
}

func TestLimits(t *testing.T) {
	deep := strings.Repeat("[", 200) + strings.Repeat("]", 200)
	for _, tc := range []struct {
		name   string
		in     string
		limits Limits
		limit  string
	}{
		{"depth", deep, Limits{}, "MaxDepth"},
		{"depth set", "[[[]]]", Limits{MaxDepth: 2}, "MaxDepth"},
		{"values", strings.Repeat("[", 1) + strings.Repeat("t", 100) + "]", Limits{MaxValues: 100}, "MaxValues"},
		{"a length beyond the bytes", "1000:abc", Limits{MaxBytes: 999}, "MaxBytes"},
		{"a huge length", "99999999999999999999:x", Limits{}, "MaxBytes"},
		{"digits", strings.Repeat("9", 11) + "+", Limits{MaxIntDigits: 10}, "MaxIntDigits"},
		{"endless digits", strings.Repeat("9", 5000), Limits{}, "MaxIntDigits"},
		{"bytes", "[" + strings.Repeat("t", 64) + "]", Limits{MaxBytes: 32}, "MaxBytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := UnmarshalWithin([]byte(tc.in), tc.limits)
			var le *LimitError
			require.ErrorAs(t, err, &le)
			assert.ErrorIs(t, err, ErrLimit)
			assert.Equal(t, tc.limit, le.Limit)
		})
	}
	// Within the limits, the same shapes decode.
	_, err := UnmarshalWithin([]byte("[[]]"), Limits{MaxDepth: 2})
	require.NoError(t, err)
	_, err = UnmarshalWithin([]byte("[tt]"), Limits{MaxValues: 3})
	require.NoError(t, err)
}

// TestDeepNestingIsIterative: nesting far deeper than a recursive decoder
// could survive decodes, given the limit, without growing the stack.
func TestDeepNestingIsIterative(t *testing.T) {
	const n = 200000
	in := strings.Repeat("[", n) + strings.Repeat("]", n)
	v, err := UnmarshalWithin([]byte(in), Limits{MaxDepth: n, MaxValues: n})
	require.NoError(t, err)
	depth := 0
	for l, ok := v.([]any); ok; l, ok = l[0].([]any) {
		depth++
		if len(l) == 0 {
			break
		}
	}
	assert.Equal(t, n, depth)
	_, err = Marshal(v)
	assert.Error(t, err, "encoding stops at MaxEncodeDepth")
}

func TestMarshalRefuses(t *testing.T) {
	cyclic := []any{nil}
	cyclic[0] = cyclic
	for name, v := range map[string]any{
		"nil":               nil,
		"a nil big.Int":     (*big.Int)(nil),
		"a struct":          struct{}{},
		"a map":             map[string]any{},
		"duplicate keys":    Dict{{"a", 1}, {"a", 2}},
		"duplicate members": Set{1, 1},
		"bad UTF-8":         "\xff",
		"bad UTF-8 symbol":  Symbol("\xff"),
		"a cycle":           cyclic,
		"nested nil":        []any{Record{Label: nil}},
	} {
		_, err := Marshal(v)
		assert.Error(t, err, name)
	}
}

// TestDecoderReadsAStream: values one after another, each read as its
// octets arrive, with the encoding of each.
func TestDecoderReadsAStream(t *testing.T) {
	values := []any{zooValue(), Record{Label: Symbol("op:abort"), Fields: []any{"done"}}, int64(5), "x"}
	var stream bytes.Buffer
	enc := NewEncoder(&stream)
	var encodings []string
	for _, v := range values {
		require.NoError(t, enc.Encode(v))
		b, _ := Marshal(v)
		encodings = append(encodings, string(b))
	}
	for name, r := range map[string]io.Reader{
		"whole":         bytes.NewReader(stream.Bytes()),
		"one byte each": iotest.OneByteReader(bytes.NewReader(stream.Bytes())),
	} {
		t.Run(name, func(t *testing.T) {
			d := NewDecoder(r, Limits{})
			for i, want := range values {
				v, err := d.Decode()
				require.NoError(t, err)
				assert.True(t, Equal(want, v), "value %d", i)
				assert.Equal(t, encodings[i], string(d.Raw()))
			}
			_, err := d.Decode()
			assert.Equal(t, io.EOF, err)
		})
	}
}

func TestDecoderEndsCleanlyOrNot(t *testing.T) {
	d := NewDecoder(strings.NewReader("t[1+"), Limits{})
	v, err := d.Decode()
	require.NoError(t, err)
	assert.Equal(t, true, v)
	_, err = d.Decode()
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)

	boom := errors.New("boom")
	d = NewDecoder(io.MultiReader(strings.NewReader("[1+"), iotest.ErrReader(boom)), Limits{})
	_, err = d.Decode()
	assert.ErrorIs(t, err, boom)
}

// TestClaimedLengthPinsNothing: a stream that claims a long string and
// sends a few octets holds a buffer the size of what arrived, not of
// what was claimed.
func TestClaimedLengthPinsNothing(t *testing.T) {
	d := NewDecoder(strings.NewReader("4000000:abc"), Limits{})
	_, err := d.Decode()
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.Less(t, cap(d.p.buf), 64<<10)
}

// TestRoundTrip: values built from every type encode, decode and encode
// again to the same octets.
func TestRoundTrip(t *testing.T) {
	atoms := []any{true, false, int64(0), int64(-1), int64(1 << 40), new(big.Int).Lsh(big.NewInt(-3), 100),
		float32(-0.25), math.Inf(1), 0.0, []byte{}, []byte{0, 1, 255}, "", "héllo", Symbol(""), Symbol("op:deliver")}
	var vals []any
	vals = append(vals, atoms...)
	for i := range 50 {
		a, b := atoms[i%len(atoms)], atoms[(i*7+3)%len(atoms)]
		vals = append(vals,
			[]any{a, b, []any{a}},
			Record{Label: Symbol("desc:export"), Fields: []any{int64(i), a}},
			Dict{{Symbol("k"), a}, {int64(i), b}, {"s", Set{int64(i), "x"}}},
		)
	}
	for _, v := range vals {
		b, err := Marshal(v)
		require.NoError(t, err)
		got, err := Unmarshal(b)
		require.NoError(t, err, "%q", b)
		again, err := Marshal(got)
		require.NoError(t, err)
		assert.Equal(t, string(b), string(again))
		assert.True(t, Equal(v, got))
	}
}

func TestDictAndSetLookups(t *testing.T) {
	d := Dict{{Symbol("a"), int64(1)}, {[]byte("b"), "two"}}
	v, ok := d.Get(Symbol("a"))
	assert.True(t, ok)
	assert.Equal(t, int64(1), v)
	_, ok = d.Get("a") // a string is not a symbol
	assert.False(t, ok)
	v, ok = d.Get([]byte("b"))
	assert.True(t, ok)
	assert.Equal(t, "two", v)
	s := Set{int64(1), "x"}
	assert.True(t, s.Has(1))
	assert.False(t, s.Has(Symbol("x")))
}
