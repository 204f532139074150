package syrup

import (
	"bytes"
	"errors"
	"fmt"
)

// Symbol is a Syrup symbol: an identifier, encoded like a string with a
// different marker ('), as OCapN names its operations (op:deliver, say).
type Symbol string

// Record is a Syrup record: a label, usually a Symbol, and fields. OCapN's
// messages and descriptors are records.
type Record struct {
	Label  any
	Fields []any
}

// Dict is a Syrup dictionary, as entries. Syrup keys may be any value,
// which Go maps cannot hold, so a Dict is a slice; Marshal sorts it, and a
// decoded Dict is in canonical order.
type Dict []Entry

// Entry is one key and value of a Dict.
type Entry struct {
	Key, Value any
}

// Get returns the value of the entry whose key is equal to key (see
// Equal), and whether there is one.
func (d Dict) Get(key any) (any, bool) {
	for _, e := range d {
		if Equal(e.Key, key) {
			return e.Value, true
		}
	}
	return nil, false
}

// Set is a Syrup set: its members, which Marshal sorts.
type Set []any

// Has reports whether the set has a member equal to v (see Equal).
func (s Set) Has(v any) bool {
	for _, m := range s {
		if Equal(m, v) {
			return true
		}
	}
	return false
}

// Equal reports whether a and b are the same Syrup value: whether they
// have the same encoding. Values that cannot be encoded are equal to
// nothing.
func Equal(a, b any) bool {
	ea, err := Marshal(a)
	if err != nil {
		return false
	}
	eb, err := Marshal(b)
	return err == nil && bytes.Equal(ea, eb)
}

// ErrLimit is matched (errors.Is) by every *LimitError.
var ErrLimit = errors.New("syrup: input beyond a limit")

// LimitError reports input that goes beyond one of the decoder's Limits.
type LimitError struct {
	Limit  string // the Limits field: "MaxDepth", "MaxBytes", "MaxValues" or "MaxIntDigits"
	Value  int    // its value
	Offset int64  // where in the input the limit was reached
}

// Error names the limit and the amount.
func (e *LimitError) Error() string {
	return fmt.Sprintf("syrup: input at offset %d goes beyond %s (%d)", e.Offset, e.Limit, e.Value)
}

// Is reports whether target is ErrLimit.
func (e *LimitError) Is(target error) bool { return target == ErrLimit }

// ErrSyntax is matched (errors.Is) by every *SyntaxError.
var ErrSyntax = errors.New("syrup: malformed input")

// SyntaxError reports input that is not canonical Syrup.
type SyntaxError struct {
	Offset int64  // of the first octet that is wrong
	Msg    string // what is wrong
}

// Error names the offset and what was wrong.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("syrup: offset %d: %s", e.Offset, e.Msg)
}

// Is reports whether target is ErrSyntax.
func (e *SyntaxError) Is(target error) bool { return target == ErrSyntax }
