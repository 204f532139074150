package ocapn

import (
	"crypto/ed25519"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// Vectors computed with the OCapN test suite's own Python code
// (utils/captp_types.py, utils/captp.py) for the Ed25519 keys whose seeds
// are the octets 0..31 (A) and 32..63 (B).
const (
	vecPubA       = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
	vecPubASyrup  = "5b3130277075626c69632d6b65795b33276563635b352763757276653727456432353531395d5b3527666c616773352765646473615d5b31277133323a03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b85d5d5d"
	vecIDA        = "faf328db5bc8cf63e851bd0e95032fdb6f72403aefd6d0b79cfa6849c04f0741"
	vecIDB        = "dc5fef641d6ff495c0ea46a09000ef91475441baadf2611598ec6cb66ffb524a"
	vecSession    = "f6621a0e8f7d543c617c4958cc5a13ebef8d7638b714bd527e8f94ec0beddef0"
	vecLocMessage = `<11'my-location<10'ocapn-peer16'tcp-testing-only6"abc123{4"host9"127.0.0.14"port5"22045}>>`
	vecStart      = "3c3136276f703a73746172742d73657373696f6e3322312e305b3130277075626c69632d6b65795b33276563635b352763757276653727456432353531395d5b3527666c616773352765646473615d5b31277133323a03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b85d5d5d3c3130276f6361706e2d706565723136277463702d74657374696e672d6f6e6c7936226162633132337b3422686f737439223132372e302e302e313422706f7274352232323034357d3e5b37277369672d76616c5b352765646473615b31277233323afebb5c1bf24a59a9651d8885423a044eba8337ff54d6760e8f9e066fcdba983d5d5b31277333323a87e476695606ba43b1c2aa848c03694391ebf1b709fea64152f3fc61f95aca055d5d5d3e"
)

func seedKey(from byte) sessionKey {
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = from + byte(i)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	return sessionKey{pub: priv.Public().(ed25519.PublicKey), priv: priv}
}

func TestCryptoAgreesWithTheTestSuite(t *testing.T) {
	a, b := seedKey(0), seedKey(32)
	assert.Equal(t, vecPubA, hex.EncodeToString(a.pub))
	enc, err := syrup.Marshal(publicKeySyrup(a.pub))
	require.NoError(t, err)
	assert.Equal(t, vecPubASyrup, hex.EncodeToString(enc))
	assert.Equal(t, vecIDA, hex.EncodeToString(publicID(a.pub)))
	assert.Equal(t, vecIDB, hex.EncodeToString(publicID(b.pub)))
	assert.Equal(t, vecSession, hex.EncodeToString(sessionID(publicID(a.pub), publicID(b.pub))))
	assert.Equal(t, vecSession, hex.EncodeToString(sessionID(publicID(b.pub), publicID(a.pub))), "either order")

	loc := Peer{Transport: "tcp-testing-only", Designator: "abc123", Hints: map[string]string{"host": "127.0.0.1", "port": "22045"}}
	msg, err := locationMessage(loc)
	require.NoError(t, err)
	assert.Equal(t, vecLocMessage, string(msg))

	start, err := startSessionMessage(a, loc)
	require.NoError(t, err)
	assert.Equal(t, vecStart, hex.EncodeToString(start))

	// And it reads back, verified.
	v, err := syrup.Unmarshal(start)
	require.NoError(t, err)
	got, err := parseStartSession(v.(syrup.Record))
	require.NoError(t, err)
	assert.Equal(t, a.pub, got.pub)
	assert.True(t, got.location.Same(loc))
}

func TestKeyAndSignatureFormsAreExact(t *testing.T) {
	a := seedKey(0)
	good := publicKeySyrup(a.pub)
	_, err := publicKeyFromSyrup(good)
	require.NoError(t, err)
	sig := ed25519.Sign(a.priv, []byte("x"))
	got, err := signatureFromSyrup(signatureSyrup(sig))
	require.NoError(t, err)
	assert.Equal(t, sig, got)
	for name, v := range map[string]any{
		"not a list":  "public-key",
		"short q":     []any{sym("public-key"), []any{sym("ecc"), []any{sym("curve"), sym("Ed25519")}, []any{sym("flags"), sym("eddsa")}, []any{sym("q"), []byte{1, 2}}}},
		"other curve": []any{sym("public-key"), []any{sym("ecc"), []any{sym("curve"), sym("P-256")}, []any{sym("flags"), sym("eddsa")}, []any{sym("q"), []byte(a.pub)}}},
		"extra":       append(append([]any{}, good...), int64(1)),
	} {
		_, err := publicKeyFromSyrup(v)
		assert.Error(t, err, name)
	}
	for name, v := range map[string]any{
		"short r": []any{sym("sig-val"), []any{sym("eddsa"), []any{sym("r"), sig[:31]}, []any{sym("s"), sig[32:]}}},
		"swapped": []any{sym("sig-val"), []any{sym("eddsa"), []any{sym("s"), sig[32:]}, []any{sym("r"), sig[:32]}}},
		"a list":  []any{},
	} {
		_, err := signatureFromSyrup(v)
		assert.Error(t, err, name)
	}
}
