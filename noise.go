package bokbok

import "errors"

// The handshake of secure connections is the Noise protocol
// Noise_NNpsk0_25519_ChaChaPoly_BLAKE2b (Noise specification revision 34):
//
//	-> psk, e
//	<- e, ee
//
// built on the cipher suite's primitives in crypto.go, following the
// specification's SymmetricState and HandshakeState (sections 5.2 and 5.3)
// for just this pattern. Both sides prove knowledge of the pre-shared key;
// the transport keys come from an ephemeral-ephemeral Diffie-Hellman, so
// they are fresh for every connection and stay secret if the key later
// leaks.

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
	if err := noiseKeyPair(&s.e, &s.ePub, ephemeral); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *noiseState) mixHash(data []byte) {
	h := newBlake2b()
	h.Write(s.h[:])
	h.Write(data)
	h.Sum(s.h[:0])
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

func (s *noiseState) encryptAndHash(out, plaintext []byte) []byte {
	start := len(out)
	if !s.hasK {
		out = append(out, plaintext...)
	} else {
		out = noiseEncrypt(out, &s.k, s.n, s.h[:], plaintext)
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
		var err error
		if plaintext, err = noiseDecrypt(&s.k, s.n, s.h[:], ciphertext); err != nil {
			return nil, err
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

// mixEE is the "ee" token; it fails on a low-order key.
func (s *noiseState) mixEE() error {
	dh, err := noiseDH(&s.e, &s.re)
	if err != nil {
		return err
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
