// Package msgpackcheck checks MessagePack bytes from a peer before they are
// decoded, and decodes them so that the decoder cannot be led astray.
//
// A peer's bytes are checked once, without recursion and without
// allocation: they must hold exactly one well-formed value, nested at most
// MaxDepth levels, in which every declared length and count fits in the
// bytes that remain. The check also estimates the Go memory that decoding
// the value into interface values would take (Info.Decoded), so callers
// can charge a message for what it will cost rather than for its size.
//
// msgpack v5 has one way around such a check: when it expects a map and
// meets an extension, it skips the extension's header and reads the
// extension's payload (opaque bytes to the check) as a map header, and
// then reads on from there. The decoders made here read through a Reader
// that refuses to read an item's first byte inside an extension payload,
// so every item the decoder starts is one the check has seen. Extension
// payloads can still be read as bytes (ReadFull, timestamps, the
// extension decoders of the capability layer); an extension type whose
// decoder reads msgpack items from inside its payload is refused.
package msgpackcheck
