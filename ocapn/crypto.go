package ocapn

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"fmt"

	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// The CapTP draft's cryptography: each side of a session has its own
// Ed25519 key pair, whose public key and signatures travel in the forms
// of gcrypt's s-expressions, as Syrup lists:
//
//	[public-key [ecc [curve Ed25519] [flags eddsa] [q <32 octets>]]]
//	[sig-val [eddsa [r <32 octets>] [s <32 octets>]]]

// sessionKey is one side's key pair for one session.
type sessionKey struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func newSessionKey() (sessionKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return sessionKey{}, fmt.Errorf("ocapn: session key: %w", err)
	}
	return sessionKey{pub: pub, priv: priv}, nil
}

func sym(s string) syrup.Symbol { return syrup.Symbol(s) }

// publicKeySyrup returns pub in the draft's form.
func publicKeySyrup(pub ed25519.PublicKey) []any {
	return []any{sym("public-key"), []any{sym("ecc"),
		[]any{sym("curve"), sym("Ed25519")},
		[]any{sym("flags"), sym("eddsa")},
		[]any{sym("q"), []byte(pub)},
	}}
}

// publicKeyFromSyrup reads a public key in the draft's form, exactly.
func publicKeyFromSyrup(v any) (ed25519.PublicKey, error) {
	top, ok := v.([]any)
	if !ok || len(top) != 2 || top[0] != sym("public-key") {
		return nil, fmt.Errorf("not a [public-key ...] list")
	}
	ecc, ok := top[1].([]any)
	if !ok || len(ecc) != 4 || ecc[0] != sym("ecc") ||
		!pairIs(ecc[1], "curve", sym("Ed25519")) || !pairIs(ecc[2], "flags", sym("eddsa")) {
		return nil, fmt.Errorf("public key: not [ecc [curve Ed25519] [flags eddsa] [q ...]]")
	}
	q, ok := pairValue(ecc[3], "q")
	if b, isBytes := q.([]byte); ok && isBytes && len(b) == ed25519.PublicKeySize {
		return ed25519.PublicKey(bytes.Clone(b)), nil
	}
	return nil, fmt.Errorf("public key: q is not %d octets", ed25519.PublicKeySize)
}

// signatureSyrup returns sig in the draft's form.
func signatureSyrup(sig []byte) []any {
	return []any{sym("sig-val"), []any{sym("eddsa"),
		[]any{sym("r"), sig[:32]},
		[]any{sym("s"), sig[32:]},
	}}
}

// signatureFromSyrup reads a signature in the draft's form, exactly.
func signatureFromSyrup(v any) ([]byte, error) {
	top, ok := v.([]any)
	if !ok || len(top) != 2 || top[0] != sym("sig-val") {
		return nil, fmt.Errorf("not a [sig-val ...] list")
	}
	eddsa, ok := top[1].([]any)
	if !ok || len(eddsa) != 3 || eddsa[0] != sym("eddsa") {
		return nil, fmt.Errorf("signature: not [eddsa [r ...] [s ...]]")
	}
	r, okR := pairValue(eddsa[1], "r")
	s, okS := pairValue(eddsa[2], "s")
	rb, isR := r.([]byte)
	sb, isS := s.([]byte)
	if !okR || !okS || !isR || !isS || len(rb) != 32 || len(sb) != 32 {
		return nil, fmt.Errorf("signature: r and s are not 32 octets each")
	}
	return append(bytes.Clone(rb), sb...), nil
}

// pairValue returns v of a [name v] list.
func pairValue(v any, name string) (any, bool) {
	l, ok := v.([]any)
	if !ok || len(l) != 2 || l[0] != sym(name) {
		return nil, false
	}
	return l[1], true
}

func pairIs(v any, name string, want syrup.Symbol) bool {
	got, ok := pairValue(v, name)
	return ok && got == want
}

// publicID is a side's public identifier: SHA-256 twice over the Syrup
// encoding of its public key.
func publicID(pub ed25519.PublicKey) []byte {
	enc, err := syrup.Marshal(publicKeySyrup(pub))
	if err != nil {
		panic(err) // the form is fixed
	}
	h := sha256.Sum256(enc)
	h = sha256.Sum256(h[:])
	return h[:]
}

// sessionID is the session's identifier: SHA-256 twice over "prot0" and
// the two sides' public identifiers, lower first.
func sessionID(a, b []byte) []byte {
	if bytes.Compare(a, b) > 0 {
		a, b = b, a
	}
	h := sha256.Sum256(append(append([]byte("prot0"), a...), b...))
	h = sha256.Sum256(h[:])
	return h[:]
}

// locationMessage is what a side signs to vouch for its location:
// <my-location <ocapn-peer ...>>, encoded.
func locationMessage(p Peer) ([]byte, error) {
	return syrup.Marshal(syrup.Record{Label: sym("my-location"), Fields: []any{p.syrup()}})
}
