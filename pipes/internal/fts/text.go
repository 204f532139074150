package fts

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	// MaxTermLen is the maximum length of a term in bytes; Terms truncates
	// longer ones at a rune boundary.
	MaxTermLen = 64

	// MaxDocTerms is the maximum number of terms indexed per document: Terms
	// returns at most this many, the first ones of the text.
	MaxDocTerms = 4096

	// MaxQueryTerms is the maximum number of distinct terms of one query;
	// Search ignores the terms after the first MaxQueryTerms distinct ones.
	MaxQueryTerms = 16
)

const (
	maxTextLen   = 64 << 10 // bytes returned by Text
	maxJSONDepth = 64       // nesting levels whose strings Text extracts
)

// Text extracts the text to index from a packet's bytes. If data is a
// valid JSON object or array, the text is the concatenation, separated by
// spaces, of its string values (not its object keys) nested at most 64
// levels deep. Otherwise, if data is valid UTF-8, the text is data itself.
// Otherwise it is empty. The text is valid UTF-8 and at most 64 KiB long:
// it is cut at a rune boundary.
func Text(data []byte) string {
	if isJSONContainer(data) && json.Valid(data) {
		return jsonText(data)
	}
	if !utf8.Valid(data) {
		return ""
	}
	return string(data[:cutLen(data, maxTextLen)])
}

// isJSONContainer reports whether data's first non-space byte opens a JSON
// object or array.
func isJSONContainer(data []byte) bool {
	data = bytes.TrimLeft(data, " \t\r\n")
	return len(data) > 0 && (data[0] == '{' || data[0] == '[')
}

// cutLen returns the largest n <= max such that s[:n] ends at a rune
// boundary of the UTF-8 string s.
func cutLen[T string | []byte](s T, max int) int {
	if len(s) <= max {
		return len(s)
	}
	n := max
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return n
}

// jsonText streams the tokens of the valid JSON data, collecting string
// values. The decoder keeps the nesting stack; kinds remembers, for the
// first maxJSONDepth levels, whether a level is an object, so that object
// keys can be told from values. Strings deeper than that are skipped.
func jsonText(data []byte) string {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var (
		sb        strings.Builder
		kinds     [maxJSONDepth]bool // kinds[i]: level i+1 is an object
		depth     int
		expectKey bool
	)
	inObject := func() bool { return depth > 0 && depth <= maxJSONDepth && kinds[depth-1] }
	for sb.Len() < maxTextLen {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				if depth < maxJSONDepth {
					kinds[depth] = t == '{'
				}
				depth++
				expectKey = t == '{'
			default:
				depth--
				expectKey = inObject()
			}
		case string:
			if expectKey {
				expectKey = false
				continue
			}
			if depth <= maxJSONDepth && t != "" {
				if sb.Len() > 0 {
					sb.WriteByte(' ')
				}
				sb.WriteString(t[:cutLen(t, maxTextLen-sb.Len())])
			}
			expectKey = inObject()
		default:
			expectKey = inObject()
		}
	}
	return sb.String()
}

// Terms splits text into index terms: the maximal runs of Unicode letters
// and digits, lowercased, each truncated at a rune boundary to at most
// MaxTermLen bytes. It returns at most MaxDocTerms terms, the first ones.
func Terms(text string) []string {
	var out []string
	eachTerm(text, func(t string) bool {
		out = append(out, t)
		return len(out) < MaxDocTerms
	})
	return out
}

// eachTerm calls fn with each term of text in order, until fn returns
// false.
func eachTerm(text string, fn func(term string) bool) {
	var buf [MaxTermLen]byte
	n, in := 0, false
	for _, r := range text {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			in = true
			if r < utf8.RuneSelf {
				if 'A' <= r && r <= 'Z' {
					r += 'a' - 'A'
				}
			} else {
				r = unicode.ToLower(r)
			}
			if n+utf8.RuneLen(r) <= MaxTermLen {
				n += utf8.EncodeRune(buf[n:], r)
			}
			continue
		}
		if in {
			if !fn(string(buf[:n])) {
				return
			}
			n, in = 0, false
		}
	}
	if in {
		fn(string(buf[:n]))
	}
}
