package fts

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestText(t *testing.T) {
	deepArray := strings.Repeat("[", 10000) + `"deep"` + strings.Repeat("]", 10000)
	deepObject := strings.Repeat(`{"k":`, 10000) + `"deep"` + strings.Repeat("}", 10000)
	tests := []struct {
		name string
		data string
		want string
	}{
		{"chat", `{"text":"Hello, World","sender":"alice","timestamp":1}`, "Hello, World alice"},
		{"array", ` ["a", 1, true, null, "b"]`, "a b"},
		{"nested", `{"x":{"y":["p",{"z":"q"}],"w":"r"},"k":"s"}`, "p q r s"},
		{"keys only", `{"text":1,"sender":{}}`, ""},
		{"escapes", `{"t":"caf\u00e9 \ud83d\ude00"}`, "café 😀"},
		{"plain", "just some text", "just some text"},
		{"json scalar", `"quoted"`, `"quoted"`},
		{"invalid json", `{"text":"oops"`, `{"text":"oops"`},
		{"trailing data", `{"a":"b"} x`, `{"a":"b"} x`},
		{"not utf8", "abc\xff\xfe", ""},
		{"empty", "", ""},
		{"too deep array", deepArray, ""},
		{"too deep object", deepObject, ""},
		{"depth 64", strings.Repeat("[", 64) + `"ok"` + strings.Repeat("]", 64), "ok"},
		{"depth 65", strings.Repeat("[", 65) + `"no"` + strings.Repeat("]", 65), ""},
		{"siblings of deep", `[` + strings.Repeat("[", 70) + `"no"` + strings.Repeat("]", 70) + `,"yes"]`, "yes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, Text([]byte(tt.data)))
		})
	}
}

func TestTextBounded(t *testing.T) {
	long := strings.Repeat("é", 50<<10) // 100 KiB
	for _, data := range []string{
		long,
		`{"a":"` + long + `"}`,
		`["` + strings.Repeat(`word", "`, 20<<10) + `"]`,
	} {
		got := Text([]byte(data))
		require.LessOrEqual(t, len(got), 64<<10)
		require.Greater(t, len(got), 60<<10)
		require.True(t, utf8.ValidString(got))
	}
}

func TestTerms(t *testing.T) {
	long := strings.Repeat("a", 100)
	longMulti := strings.Repeat("ж", 40) // 80 bytes
	tests := []struct {
		name string
		text string
		want []string
	}{
		{"chat", "Hello, World alice", []string{"hello", "world", "alice"}},
		{"digits", "room 42, x1y2 7", []string{"room", "42", "x1y2", "7"}},
		{"single letters", "a b-c", []string{"a", "b", "c"}},
		{"unicode", "Ünïcödé ΣΊΣΥΦΟΣ 東京タワー", []string{"ünïcödé", "σίσυφοσ", "東京タワー"}},
		{"punctuation only", " ,.;!? ", nil},
		{"empty", "", nil},
		{"invalid utf8", "ab\xffcd", []string{"ab", "cd"}},
		{"long", long + " b", []string{long[:MaxTermLen], "b"}},
		{"long multibyte", longMulti, []string{strings.Repeat("ж", 32)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, Terms(tt.text))
		})
	}
}

func TestTermsMaxDocTerms(t *testing.T) {
	terms := Terms(strings.Repeat("w ", MaxDocTerms+100) + "last")
	require.Len(t, terms, MaxDocTerms)
	require.NotContains(t, terms, "last")
}

func TestQueryTerms(t *testing.T) {
	require.Equal(t, []string{"a", "b"}, queryTerms("A b a B"))
	var q []string
	for i := range 40 {
		q = append(q, strings.Repeat("x", i+1))
	}
	got := queryTerms(strings.Join(q, " "))
	require.Equal(t, q[:MaxQueryTerms], got)
}

func FuzzText(f *testing.F) {
	for _, s := range []string{
		`{"text":"Hello, World","sender":"alice","timestamp":1}`,
		`[["a",{"b":"c"}],"d"]`,
		"plain text ÄÖÜ 123",
		"\xff\xfe",
		strings.Repeat("[", 100) + `"x"` + strings.Repeat("]", 100),
		`{"a":"\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		text := Text(data)
		if !utf8.ValidString(text) {
			t.Fatalf("Text not valid UTF-8: %q", text)
		}
		if len(text) > 64<<10 {
			t.Fatalf("Text too long: %d", len(text))
		}
		terms := Terms(text)
		if len(terms) > MaxDocTerms {
			t.Fatalf("%d terms", len(terms))
		}
		for _, term := range terms {
			if term == "" || len(term) > MaxTermLen || !utf8.ValidString(term) {
				t.Fatalf("bad term %q", term)
			}
		}
		if q := queryTerms(text); len(q) > MaxQueryTerms {
			t.Fatalf("%d query terms", len(q))
		}
	})
}
