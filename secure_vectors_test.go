package bokbok

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The secure-mode vectors of PROTOCOL.md: a whole handshake with fixed
// ephemeral keys (those of the Noise test vectors), the pre-shared key
// "!verysecretverysecretverysecret!", realm "example.org" and user "alice".
var (
	vecInitEphemeral = [32]byte{0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
		0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f}
	vecRespEphemeral = [32]byte{0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x4b, 0x4c, 0x4d, 0x4e, 0x4f, 0x50,
		0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x5b, 0x5c, 0x5d, 0x5e, 0x5f, 0x60}
	vecPSK   = Key([]byte("!verysecretverysecretverysecret!"))
	vecRealm = "example.org"
	vecUser  = "alice"
)

// secureVector runs the vector handshake and returns its pieces.
type secureVector struct {
	prologue, msg1, msg2, refusal []byte
	toServer, toClient            Key
	clientRecord, serverRecord    []byte // each side's first record: SETTINGS with the defaults
	closeRecord                   []byte // the client's second record: CLOSE
}

func makeSecureVector(t *testing.T) secureVector {
	var v secureVector
	v.prologue = securePrologue(vecRealm, vecUser)
	ini, err := newNoiseState(v.prologue, &vecInitEphemeral)
	require.NoError(t, err)
	resp, err := newNoiseState(v.prologue, &vecRespEphemeral)
	require.NoError(t, err)
	m1 := ini.writeMessage1(&vecPSK, handshakePayload)
	v.msg1 = appendHandshakeMsg(nil, append(append([]byte{byte(len(vecUser))}, vecUser...), m1...))
	_, err = resp.readMessage1(&vecPSK, m1)
	require.NoError(t, err)
	m2, err := resp.writeMessage2(handshakePayload)
	require.NoError(t, err)
	v.msg2 = appendHandshakeMsg(nil, m2)
	_, err = ini.readMessage2(m2)
	require.NoError(t, err)
	v.refusal = appendHandshakeMsg(nil, nil)
	v.toServer, v.toClient = ini.split()
	s1, s2 := resp.split()
	require.Equal(t, v.toServer, s1)
	require.Equal(t, v.toClient, s2)

	defaults, err := (*Config)(nil).withDefaults()
	require.NoError(t, err)
	settingsFrame := (&Conn{cfg: defaults}).settingsFrame()
	record := func(key Key, dir byte, close bool) []byte {
		var out sinkBuffer
		rw := newRecordWriter(&out, key, dir)
		_, err := rw.Write(settingsFrame)
		require.NoError(t, err)
		require.NoError(t, rw.Flush())
		if close {
			out.b = out.b[:0]
			require.NoError(t, rw.close(time.Time{}))
		}
		return out.b
	}
	v.clientRecord = record(v.toServer, dirClientToServer, false)
	v.serverRecord = record(v.toClient, dirServerToClient, false)
	v.closeRecord = record(v.toServer, dirClientToServer, true)
	return v
}

// sinkBuffer collects writes.
type sinkBuffer struct{ b []byte }

func (s *sinkBuffer) Write(p []byte) (int, error) { s.b = append(s.b, p...); return len(p), nil }

func init() {
	vec := func(pick func(secureVector) []byte) func(t *testing.T) []byte {
		return func(t *testing.T) []byte { return pick(makeSecureVector(t)) }
	}
	protocolExamples = append(protocolExamples,
		protocolExample{"preamble, secure", func(t *testing.T) []byte { return appendPreamble(nil, modeSecure) }},
		protocolExample{"secure vector: prologue", vec(func(v secureVector) []byte { return v.prologue })},
		protocolExample{"secure vector: message 1", vec(func(v secureVector) []byte { return v.msg1 })},
		protocolExample{"secure vector: message 2", vec(func(v secureVector) []byte { return v.msg2 })},
		protocolExample{"secure vector: refusal", vec(func(v secureVector) []byte { return v.refusal })},
		protocolExample{"secure vector: client-to-server key", vec(func(v secureVector) []byte { return v.toServer[:] })},
		protocolExample{"secure vector: server-to-client key", vec(func(v secureVector) []byte { return v.toClient[:] })},
		protocolExample{"secure vector: client's first record", vec(func(v secureVector) []byte { return v.clientRecord })},
		protocolExample{"secure vector: server's first record", vec(func(v secureVector) []byte { return v.serverRecord })},
		protocolExample{"secure vector: client's CLOSE record", vec(func(v secureVector) []byte { return v.closeRecord })},
		protocolExample{"PassphraseToKey golden", func(t *testing.T) []byte {
			k := PassphraseToKey("correct horse battery staple", vecRealm, vecUser)
			return k[:]
		}},
	)
}

// TestSecureVectorHandshake checks that a real client and server, given the
// vector's ephemeral keys, put exactly the vector's bytes on the wire: the
// vectors describe what the code does, not a parallel implementation.
func TestSecureVectorHandshake(t *testing.T) {
	v := makeSecureVector(t)
	na, nb := net.Pipe()
	tap := &tapConn{Conn: nb}
	defaults, err := (*Config)(nil).withDefaults()
	require.NoError(t, err)
	srvCfg := *defaults
	srvCfg.Realm = vecRealm
	srvCfg.KeepaliveInterval = -1
	server := newConn(tap, &srvCfg, "")
	done := make(chan error, 1)
	go func() {
		done <- server.open(context.Background(), opening{server: true, ephemeral: &vecRespEphemeral, secret: &Key{},
			userKeys: func(string) []Key { return []Key{vecPSK} }}, nil)
	}()
	cliCfg := *defaults
	cliCfg.Key, cliCfg.User, cliCfg.Realm, cliCfg.KeepaliveInterval = &vecPSK, vecUser, vecRealm, -1
	client := newConn(na, &cliCfg, "")
	require.NoError(t, client.open(context.Background(), opening{ephemeral: &vecInitEphemeral}, nil))
	require.NoError(t, <-done)
	defer server.Close()
	defer client.Close()

	wantIn := append(append(appendPreamble(nil, modeSecure), v.msg1...), v.clientRecord...)
	wantOut := append(append(appendPreamble(nil, modeSecure), v.msg2...), v.serverRecord...)
	require.Equal(t, hexDump(wantIn), hexDump(tap.read()), "bytes the client sent")
	require.Equal(t, hexDump(wantOut), hexDump(tap.written()), "bytes the server sent")
}

// tapConn records what passes through a net.Conn.
type tapConn struct {
	net.Conn
	mu      sync.Mutex
	in, out []byte
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.in = append(c.in, p[:n]...)
	c.mu.Unlock()
	return n, err
}

func (c *tapConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.out = append(c.out, p[:n]...)
	c.mu.Unlock()
	return n, err
}

func (c *tapConn) read() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.in...)
}

func (c *tapConn) written() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.out...)
}
