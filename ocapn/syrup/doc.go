// Package syrup encodes and decodes Syrup, the serialization OCapN peers
// exchange: the OCapN pre-standardization group's draft Syrup
// specification (github.com/ocapn/syrup, draft-specification.md).
//
// # Values
//
// Syrup's types map to Go values as follows; Unmarshal and Decoder.Decode
// produce exactly these, and Marshal and Encoder.Encode accept them (and
// the other integer types):
//
//	Syrup                       Go
//	t, f                        bool
//	F<4 octets>                 float32
//	D<8 octets>                 float64
//	<digits>+, <digits>-        int64, or *big.Int beyond int64
//	<len>:<octets>              []byte
//	<len>"<utf-8>               string
//	<len>'<utf-8>               Symbol
//	[...]                       []any
//	{<key><value>...}           Dict
//	<<label><field>...>         Record
//	#<item>...$                 Set
//
// # Canonical form
//
// Syrup is canonical: a value has exactly one encoding, which OCapN signs
// and compares. Marshal writes it (dictionary entries sorted by their
// encoded keys, set members by their encodings, bytewise) and refuses a
// Dict or Set with two equal keys or members. Decoding accepts only
// canonical input: no whitespace, no leading zeros in a length or an
// integer, no negative zero, dictionary keys and set members strictly
// ascending, strings and symbols valid UTF-8. So a decoded value encodes
// back to exactly the bytes it was read from, and two peers agree on what
// was signed. (Some implementations also read whitespace between values
// and bencode's alternative brackets; none writes them.)
//
// # Hostile input
//
// Decoding is iterative, never recursive, and bounded by Limits: the
// nesting depth, the bytes of one value, the number of values in it, and
// the digits of an integer. Every length is checked against what is left
// of the byte budget before anything is allocated for it, and a stream
// is read as it arrives, so a peer that claims a large string and sends
// little pins little. Malformed input is a *SyntaxError; input beyond a
// limit is a *LimitError (errors.Is(err, ErrLimit)).
package syrup
