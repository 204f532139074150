package bokbok

import (
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"hash"

	"golang.org/x/crypto/blake2b"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"
)

// The handshake of secure connections is the Noise protocol
// Noise_NNpsk0_25519_ChaChaPoly_BLAKE2b (Noise specification revision 34):
//
//	-> psk, e
//	<- e, ee
//
// built here from golang.org/x/crypto, following the specification's
// SymmetricState and HandshakeState (sections 5.2 and 5.3) for just this
// pattern. Both sides prove knowledge of the pre-shared key; the transport
// keys come from an ephemeral-ephemeral Diffie-Hellman, so they are fresh
// for every connection and stay secret if the key later leaks.

const (
	noiseProtocolName = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2b"
	noiseHashLen      = blake2b.Size // 64
	noiseDHLen        = curve25519.PointSize
	noiseTagLen       = chacha20poly1305.Overhead
)

var errNoiseDecrypt = errors.New("noise: message failed authentication")

// noiseState is a Noise SymmetricState plus the ephemeral keys of one
// handshake. Its secrets are cleared by wipe.
type noiseState struct {
	ck   [noiseHashLen]byte // chaining key
	h    [noiseHashLen]byte // handshake hash
	k    [32]byte           // cipher key; valid once hasK
	hasK bool
	n    uint64 // cipher nonce

	e    [32]byte // our ephemeral private key
	ePub [32]byte // our ephemeral public key
	re   [32]byte // the peer's ephemeral public key
}

// newNoiseState starts a handshake with the given prologue and our
// ephemeral private key (random if nil; tests pass fixed keys).
func newNoiseState(prologue []byte, ephemeral *[32]byte) (*noiseState, error) {
	s := &noiseState{}
	copy(s.h[:], noiseProtocolName) // the name is shorter than HASHLEN: zero-padded
	s.ck = s.h
	s.mixHash(prologue)
	if ephemeral != nil {
		s.e = *ephemeral
	} else if _, err := rand.Read(s.e[:]); err != nil {
		return nil, err
	}
	pub, err := curve25519.X25519(s.e[:], curve25519.Basepoint)
	if err != nil {
		return nil, err
	}
	copy(s.ePub[:], pub)
	return s, nil
}

func newBlake2b() hash.Hash {
	h, _ := blake2b.New512(nil)
	return h
}

func (s *noiseState) mixHash(data []byte) {
	h := newBlake2b()
	h.Write(s.h[:])
	h.Write(data)
	h.Sum(s.h[:0])
}

// hkdf is the specification's HKDF(chaining_key, input_key_material,
// num_outputs) with HMAC-BLAKE2b, returning three outputs (callers that
// need two ignore the third).
func hkdf(ck, ikm []byte) (o1, o2, o3 [noiseHashLen]byte) {
	mac := hmac.New(newBlake2b, ck)
	mac.Write(ikm)
	temp := mac.Sum(nil)
	defer clear(temp)
	mac = hmac.New(newBlake2b, temp)
	mac.Write([]byte{1})
	mac.Sum(o1[:0])
	mac.Reset()
	mac.Write(o1[:])
	mac.Write([]byte{2})
	mac.Sum(o2[:0])
	mac.Reset()
	mac.Write(o2[:])
	mac.Write([]byte{3})
	mac.Sum(o3[:0])
	return
}

func (s *noiseState) mixKey(ikm []byte) {
	ck, k, o3 := hkdf(s.ck[:], ikm)
	s.ck = ck
	copy(s.k[:], k[:32]) // HASHLEN is 64: the cipher key is truncated to 32 bytes
	s.hasK, s.n = true, 0
	clear(k[:])
	clear(o3[:])
}

func (s *noiseState) mixKeyAndHash(ikm []byte) {
	ck, th, k := hkdf(s.ck[:], ikm)
	s.ck = ck
	s.mixHash(th[:])
	copy(s.k[:], k[:32])
	s.hasK, s.n = true, 0
	clear(th[:])
	clear(k[:])
}

// noiseNonce is ChaChaPoly's nonce: 4 zero bytes, then n little-endian.
func noiseNonce(n uint64) []byte {
	var nonce [chacha20poly1305.NonceSize]byte
	binary.LittleEndian.PutUint64(nonce[4:], n)
	return nonce[:]
}

func (s *noiseState) encryptAndHash(out, plaintext []byte) []byte {
	start := len(out)
	if !s.hasK {
		out = append(out, plaintext...)
	} else {
		aead, _ := chacha20poly1305.New(s.k[:])
		out = aead.Seal(out, noiseNonce(s.n), plaintext, s.h[:])
		s.n++
	}
	s.mixHash(out[start:])
	return out
}

func (s *noiseState) decryptAndHash(ciphertext []byte) ([]byte, error) {
	var plaintext []byte
	if !s.hasK {
		plaintext = append([]byte(nil), ciphertext...)
	} else {
		aead, _ := chacha20poly1305.New(s.k[:])
		var err error
		plaintext, err = aead.Open(nil, noiseNonce(s.n), ciphertext, s.h[:])
		if err != nil {
			return nil, errNoiseDecrypt
		}
		s.n++
	}
	s.mixHash(ciphertext)
	return plaintext, nil
}

// writeE is the "e" token in a PSK handshake: send our ephemeral public
// key, mix it into the hash and (as every PSK handshake does) the key.
func (s *noiseState) writeE(out []byte) []byte {
	s.mixHash(s.ePub[:])
	s.mixKey(s.ePub[:])
	return append(out, s.ePub[:]...)
}

// readE is the peer's "e" token.
func (s *noiseState) readE(msg []byte) error {
	copy(s.re[:], msg[:noiseDHLen])
	if s.re == s.ePub {
		return errors.New("noise: the peer's ephemeral key is our own (reflected message)")
	}
	s.mixHash(s.re[:])
	s.mixKey(s.re[:])
	return nil
}

// mixEE is the "ee" token. X25519 rejects low-order points (an all-zero
// shared secret), so a peer cannot force a known shared secret.
func (s *noiseState) mixEE() error {
	dh, err := curve25519.X25519(s.e[:], s.re[:])
	if err != nil {
		return errors.New("noise: the peer's ephemeral key is a low-order point")
	}
	s.mixKey(dh)
	clear(dh)
	return nil
}

// Initiator, message 1: -> psk, e, then the encrypted payload.
func (s *noiseState) writeMessage1(psk *Key, payload []byte) []byte {
	s.mixKeyAndHash(psk[:])
	out := s.writeE(nil)
	return s.encryptAndHash(out, payload)
}

// Responder, message 1.
func (s *noiseState) readMessage1(psk *Key, msg []byte) ([]byte, error) {
	if len(msg) < noiseDHLen+noiseTagLen {
		return nil, errors.New("noise: message 1 too short")
	}
	s.mixKeyAndHash(psk[:])
	if err := s.readE(msg); err != nil {
		return nil, err
	}
	return s.decryptAndHash(msg[noiseDHLen:])
}

// Responder, message 2: <- e, ee, then the encrypted payload.
func (s *noiseState) writeMessage2(payload []byte) ([]byte, error) {
	out := s.writeE(nil)
	if err := s.mixEE(); err != nil {
		return nil, err
	}
	return s.encryptAndHash(out, payload), nil
}

// Initiator, message 2.
func (s *noiseState) readMessage2(msg []byte) ([]byte, error) {
	if len(msg) < noiseDHLen+noiseTagLen {
		return nil, errors.New("noise: message 2 too short")
	}
	if err := s.readE(msg); err != nil {
		return nil, err
	}
	if err := s.mixEE(); err != nil {
		return nil, err
	}
	return s.decryptAndHash(msg[noiseDHLen:])
}

// split returns the transport keys: initiator to responder, and responder
// to initiator.
func (s *noiseState) split() (toResponder, toInitiator Key) {
	k1, k2, k3 := hkdf(s.ck[:], nil)
	copy(toResponder[:], k1[:32])
	copy(toInitiator[:], k2[:32])
	clear(k1[:])
	clear(k2[:])
	clear(k3[:])
	return
}

// wipe clears the handshake's secrets.
func (s *noiseState) wipe() {
	clear(s.ck[:])
	clear(s.k[:])
	clear(s.e[:])
}
