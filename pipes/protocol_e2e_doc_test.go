package pipes

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/curve25519"
)

// The example of PROTOCOL.md §21.16, checked both ways: the node opens
// the documented bytes, and makes the same ones from the same inputs.
func TestProtocolDocEncryptedExample(t *testing.T) {
	dumps := docDumps(t, "21.16 End-to-end encrypted pipelines")
	require.Len(t, dumps, 3, "§21.16 shows a hello, a key packet and a sealed packet")
	hello, keyPkt, sealed := dumps[0], dumps[1], dumps[2]

	var alicePriv, bobPriv [32]byte
	for i := range alicePriv {
		alicePriv[i], bobPriv[i] = 0x0a, 0x0b
	}
	pub := func(priv [32]byte) [32]byte {
		p, err := curve25519.X25519(priv[:], curve25519.Basepoint)
		require.NoError(t, err)
		return [32]byte(p)
	}
	alicePub, bobPub := pub(alicePriv), pub(bobPriv)
	want := pipelineKey{ID: keyID([]byte("KEY-0001"))}
	for i := range want.Key {
		want.Key[i] = byte(i)
	}

	assert.Equal(t, append([]byte{packetHello}, alicePub[:]...), hello)

	kp, err := parseKeyPacket(keyPkt, &bobPub)
	require.NoError(t, err)
	assert.Equal(t, want.ID, kp.ID)
	assert.Equal(t, alicePub, kp.From)
	assert.Equal(t, [][32]byte{bobPub}, kp.To)
	got, err := kp.open(&bobPriv)
	require.NoError(t, err)
	assert.Equal(t, want, got)
	_, err = parseKeyPacket(keyPkt, &alicePub)
	require.NoError(t, err)
	other, _ := parseKeyPacket(keyPkt, &alicePub)
	_, err = other.open(&alicePriv)
	require.ErrorIs(t, err, ErrNoKey, "no envelope for alice's node")

	data, err := unseal(&want.Key, sealed)
	require.NoError(t, err)
	assert.Equal(t, "hi", string(data))
	var nonce [24]byte
	for i := range nonce {
		nonce[i] = byte(0x30 + i)
	}
	assert.Equal(t, sealed, sealNonce(want, &nonce, []byte("hi")))

	// Damaged packets are refused, never opened. (The key ID, bytes 1 to
	// 8, only names the key: changed, it names one the node lacks.)
	for i := range sealed {
		if i >= 1 && i <= 8 {
			continue
		}
		bad := bytes.Clone(sealed)
		bad[i] ^= 0x40
		if _, err := unseal(&want.Key, bad); err == nil {
			t.Fatalf("a sealed packet damaged at byte %d opened", i)
		}
	}
	_, err = parseKeyPacket(keyPkt[:len(keyPkt)-1], &bobPub)
	require.ErrorIs(t, err, ErrNoKey)
}
