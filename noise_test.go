package bokbok

import (
	"encoding/hex"
	"testing"

	"github.com/flynn/noise"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/chacha20poly1305"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	require.NoError(t, err)
	return b
}

// TestNoiseKnownAnswer runs the Noise_NNpsk0_25519_ChaChaPoly_BLAKE2b test
// vector published with the Noise test suites (empty prologue) through our
// handshake, and checks the transport keys by encrypting the vector's two
// transport messages with ChaChaPoly as Noise does.
func TestNoiseKnownAnswer(t *testing.T) {
	var ie, re [32]byte
	copy(ie[:], unhex(t, "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"))
	copy(re[:], unhex(t, "4142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60"))
	var psk Key
	copy(psk[:], unhex(t, "2176657279736563726574766572797365637265747665727973656372657421"))

	init, err := newNoiseState(nil, &ie)
	require.NoError(t, err)
	resp, err := newNoiseState(nil, &re)
	require.NoError(t, err)

	m1 := init.writeMessage1(&psk, nil)
	require.Equal(t, "358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd1662545ca945ccbc84a56bec9c401b36132676", hex.EncodeToString(m1))
	p, err := resp.readMessage1(&psk, m1)
	require.NoError(t, err)
	require.Empty(t, p)

	m2, err := resp.writeMessage2(nil)
	require.NoError(t, err)
	require.Equal(t, "64b101b1d0be5a8704bd078f9895001fc03e8e9f9522f188dd128d9846d48466f0eb7ac83b0774a9e2869b41e7740303", hex.EncodeToString(m2))
	p, err = init.readMessage2(m2)
	require.NoError(t, err)
	require.Empty(t, p)

	i1, i2 := init.split()
	r1, r2 := resp.split()
	require.Equal(t, i1, r1)
	require.Equal(t, i2, r2)
	seal := func(k Key, pt string) string {
		aead, err := chacha20poly1305.New(k[:])
		require.NoError(t, err)
		return hex.EncodeToString(aead.Seal(nil, noiseNonce(0), unhex(t, pt), nil))
	}
	require.Equal(t, "7811d68572ef1cef95b8a84abaa2c04c52c65b6bc7717b20d7d0937fbdd792", seal(i1, "79656c6c6f777375626d6172696e65"))
	require.Equal(t, "ccf5caaaee5fd10189d055e7c7e73eff5c50c424c5186ba83af5921864b95f", seal(i2, "7375626d6172696e6579656c6c6f77"))
}

// flynnConfig is github.com/flynn/noise's view of our handshake.
func flynnConfig(initiator bool, prologue []byte, psk Key) noise.Config {
	return noise.Config{
		CipherSuite:           noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2b),
		Pattern:               noise.HandshakeNN,
		Initiator:             initiator,
		Prologue:              prologue,
		PresharedKey:          psk[:],
		PresharedKeyPlacement: 0,
	}
}

// sameKeys checks that our transport keys are flynn/noise's: both encrypt
// a first message alike.
func sameKeys(t *testing.T, ours *noiseState, c1, c2 *noise.CipherState) {
	t.Helper()
	k1, k2 := ours.split()
	for _, tc := range []struct {
		ours   Key
		theirs *noise.CipherState
	}{{k1, c1}, {k2, c2}} {
		want, err := tc.theirs.Encrypt(nil, nil, []byte("x"))
		require.NoError(t, err)
		aead, err := chacha20poly1305.New(tc.ours[:])
		require.NoError(t, err)
		require.Equal(t, want, aead.Seal(nil, noiseNonce(0), []byte("x"), nil))
	}
}

// TestNoiseInteropWithFlynn runs our handshake against an independent
// implementation, github.com/flynn/noise, in both roles, with a prologue
// and payloads, and checks both sides derive the same transport keys.
func TestNoiseInteropWithFlynn(t *testing.T) {
	psk, err := GenerateKey()
	require.NoError(t, err)
	prologue := []byte("bokbok interop prologue")

	t.Run("we initiate", func(t *testing.T) {
		ours, err := newNoiseState(prologue, nil)
		require.NoError(t, err)
		theirs, err := noise.NewHandshakeState(flynnConfig(false, prologue, psk))
		require.NoError(t, err)
		m1 := ours.writeMessage1(&psk, []byte{0})
		p, _, _, err := theirs.ReadMessage(nil, m1)
		require.NoError(t, err)
		require.Equal(t, []byte{0}, p)
		m2, c1, c2, err := theirs.WriteMessage(nil, []byte("hi"))
		require.NoError(t, err)
		p, err = ours.readMessage2(m2)
		require.NoError(t, err)
		require.Equal(t, []byte("hi"), p)
		sameKeys(t, ours, c1, c2)
	})
	t.Run("they initiate", func(t *testing.T) {
		theirs, err := noise.NewHandshakeState(flynnConfig(true, prologue, psk))
		require.NoError(t, err)
		ours, err := newNoiseState(prologue, nil)
		require.NoError(t, err)
		m1, _, _, err := theirs.WriteMessage(nil, []byte{0})
		require.NoError(t, err)
		p, err := ours.readMessage1(&psk, m1)
		require.NoError(t, err)
		require.Equal(t, []byte{0}, p)
		m2, err := ours.writeMessage2([]byte("hi"))
		require.NoError(t, err)
		p, c1, c2, err := theirs.ReadMessage(nil, m2)
		require.NoError(t, err)
		require.Equal(t, []byte("hi"), p)
		sameKeys(t, ours, c1, c2)
	})
}
