package pipes

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/nacl/box"
	"golang.org/x/crypto/nacl/secretbox"
)

// The packets of an encrypted pipeline (PROTOCOL.md §21.14). The hub
// stores and forwards them as any others; only members can open them.
//
//	hello:  'H' key[32]
//	sealed: 'S' keyID[8] nonce[24] secretbox(data, nonce, key)
//	key:    'K' keyID[8] from[32] count(be16) count × (to[32] nonce[24] box(key, nonce, to, from))
//
// A hello gives a member node's box key. A key packet gives a pipeline
// key, sealed with NaCl box from the putting node's key (from) to each
// member node's key (to).
const (
	packetSealed byte = 'S'
	packetKey    byte = 'K'
	packetHello  byte = 'H' // 'H' key[32]: a member node's box key

	sealedOverhead = 1 + 8 + 24 + secretbox.Overhead
	envelopeLen    = 32 + 24 + 32 + box.Overhead
	keyHeaderLen   = 1 + 8 + 32 + 2
)

// ErrNoKey is the error of a packet of an encrypted pipeline that the
// node cannot open: no key it holds seals it, or it is damaged; and of a
// Put on an encrypted pipeline before the node holds a key.
var ErrNoKey = errors.New("pipes: no key opens this packet")

type keyID [8]byte

// pipelineKey is a secretbox key of an encrypted pipeline.
type pipelineKey struct {
	ID  keyID
	Key [32]byte
}

// newPipelineKey makes a fresh random key.
func newPipelineKey() pipelineKey {
	var k pipelineKey
	rand.Read(k.ID[:])
	rand.Read(k.Key[:])
	return k
}

// seal seals data under k, with a random nonce.
func seal(k pipelineKey, data []byte) []byte {
	var nonce [24]byte
	rand.Read(nonce[:])
	return sealNonce(k, &nonce, data)
}

func sealNonce(k pipelineKey, nonce *[24]byte, data []byte) []byte {
	out := make([]byte, 0, sealedOverhead+len(data))
	out = append(out, packetSealed)
	out = append(out, k.ID[:]...)
	out = append(out, nonce[:]...)
	return secretbox.Seal(out, data, nonce, &k.Key)
}

// sealedKeyID returns the key ID of a sealed packet.
func sealedKeyID(p []byte) (keyID, bool) {
	var id keyID
	if len(p) < sealedOverhead || p[0] != packetSealed {
		return id, false
	}
	copy(id[:], p[1:9])
	return id, true
}

// unseal opens a sealed packet with key.
func unseal(key *[32]byte, p []byte) ([]byte, error) {
	if len(p) < sealedOverhead || p[0] != packetSealed {
		return nil, fmt.Errorf("%w: not a sealed packet", ErrNoKey)
	}
	var nonce [24]byte
	copy(nonce[:], p[9:33])
	out, ok := secretbox.Open(nil, p[33:], &nonce, key)
	if !ok {
		return nil, fmt.Errorf("%w: the packet does not open with its key", ErrNoKey)
	}
	return out, nil
}

// memberKey is a member node's public box key, as the hub's directory
// gives it.
type memberKey struct {
	User string
	Node NodeID
	Key  [32]byte
}

// sealKey makes the key packet giving k to each of to, from the node's
// box key pair.
func sealKey(k pipelineKey, fromPub, fromPriv *[32]byte, to []memberKey) []byte {
	out := make([]byte, 0, keyHeaderLen+len(to)*envelopeLen)
	out = append(out, packetKey)
	out = append(out, k.ID[:]...)
	out = append(out, fromPub[:]...)
	out = binary.BigEndian.AppendUint16(out, uint16(len(to)))
	for i := range to {
		var nonce [24]byte
		rand.Read(nonce[:])
		out = append(out, to[i].Key[:]...)
		out = append(out, nonce[:]...)
		out = box.Seal(out, k.Key[:], &nonce, &to[i].Key, fromPriv)
	}
	return out
}

// keyPacket is a key packet as read: who sealed it, and the envelope for
// this node if there is one.
type keyPacket struct {
	ID   keyID
	From [32]byte
	To   [][32]byte // the nodes it is sealed to
	env  []byte     // to, nonce, box: the envelope for the reader; nil if none
}

// parseKeyPacket reads a key packet and finds the envelope for pub.
func parseKeyPacket(p []byte, pub *[32]byte) (keyPacket, error) {
	var kp keyPacket
	if len(p) < keyHeaderLen || p[0] != packetKey {
		return kp, fmt.Errorf("%w: not a key packet", ErrNoKey)
	}
	copy(kp.ID[:], p[1:9])
	copy(kp.From[:], p[9:41])
	n := int(binary.BigEndian.Uint16(p[41:43]))
	rest := p[keyHeaderLen:]
	if len(rest) != n*envelopeLen {
		return kp, fmt.Errorf("%w: a key packet of %d envelopes has %d bytes of them", ErrNoKey, n, len(rest))
	}
	kp.To = make([][32]byte, 0, n)
	for ; len(rest) > 0; rest = rest[envelopeLen:] {
		to := [32]byte(rest[:32])
		kp.To = append(kp.To, to)
		if to == *pub {
			kp.env = rest[:envelopeLen]
		}
	}
	return kp, nil
}

// open opens the envelope of kp for the node with priv.
func (kp *keyPacket) open(priv *[32]byte) (pipelineKey, error) {
	k := pipelineKey{ID: kp.ID}
	if kp.env == nil {
		return k, fmt.Errorf("%w: the key packet has no envelope for this node", ErrNoKey)
	}
	var nonce [24]byte
	copy(nonce[:], kp.env[32:56])
	key, ok := box.Open(nil, kp.env[56:], &nonce, &kp.From, priv)
	if !ok || len(key) != 32 {
		return k, fmt.Errorf("%w: the key packet's envelope does not open", ErrNoKey)
	}
	copy(k.Key[:], key)
	return k, nil
}
