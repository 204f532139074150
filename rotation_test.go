package bokbok

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeKeysFile writes a keys file of "user key" lines to path, private.
func writeKeysFile(t testing.TB, path string, lines ...string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path+".new", []byte(strings.Join(lines, "\n")+"\n"), 0o600))
	require.NoError(t, os.Rename(path+".new", path)) // replaced at once, as editors and deploy tools do
}

func keyLine(t testing.TB, user string, k Key) string {
	text, err := k.MarshalText()
	require.NoError(t, err)
	return user + " " + string(text)
}

// rotationServer serves a keys file on loopback until the test ends.
func rotationServer(t *testing.T, kf *KeysFile) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &Server{Config: Config{Realm: atkRealm, Handler: echoHandler}, UserKeys: kf.UserKeys}
	go srv.Serve(ln)
	t.Cleanup(func() { atkStopServer(srv) })
	return ln.Addr().String()
}

func dialAs(t *testing.T, addr, user string, key Key) (*Conn, error) {
	return Dial(testCtx(t), addr, &Config{User: user, Key: &key, Realm: atkRealm})
}

// TestKeyRotation: a user with two lines in the keys file authenticates
// with either key; after the old line is removed and the file reloaded,
// only the new key works, and connections opened with the old key carry
// on.
func TestKeyRotation(t *testing.T) {
	old, fresh := mustKey(t), mustKey(t)
	path := filepath.Join(t.TempDir(), "users.txt")
	writeKeysFile(t, path, keyLine(t, "alice", old))
	kf, err := OpenKeysFile(path)
	require.NoError(t, err)
	addr := rotationServer(t, kf)

	_, err = dialAs(t, addr, "alice", fresh)
	require.ErrorIs(t, err, ErrAuth, "the new key before it is added")

	writeKeysFile(t, path, keyLine(t, "alice", old), keyLine(t, "alice", fresh))
	require.NoError(t, kf.Reload())
	assert.Equal(t, 1, kf.Rotating())
	held, err := dialAs(t, addr, "alice", old)
	require.NoError(t, err, "the old key during the rotation")
	defer held.Close()
	c, err := dialAs(t, addr, "alice", fresh)
	require.NoError(t, err, "the new key during the rotation")
	c.Close()

	writeKeysFile(t, path, keyLine(t, "alice", fresh))
	require.NoError(t, kf.Reload())
	_, err = dialAs(t, addr, "alice", old)
	require.ErrorIs(t, err, ErrAuth, "the old key after the rotation")
	c, err = dialAs(t, addr, "alice", fresh)
	require.NoError(t, err, "the new key after the rotation")
	c.Close()

	var got []byte
	require.NoError(t, held.Call(testCtx(t), []byte("still here"), &got), "a connection opened with the old key")
	assert.Equal(t, "still here", string(got))
}

// TestKeyRotationReloadDuringHandshakes: reloads that swap a user's keys
// while 50 clients open connections at once: every client with the key
// kept throughout gets in, every client with the key that comes and goes
// either gets in or is refused with ErrAuth, nothing else.
func TestKeyRotationReloadDuringHandshakes(t *testing.T) {
	kept, flapping := mustKey(t), mustKey(t)
	path := filepath.Join(t.TempDir(), "users.txt")
	both := []string{keyLine(t, "alice", kept), keyLine(t, "alice", flapping)}
	writeKeysFile(t, path, both...)
	kf, err := OpenKeysFile(path)
	require.NoError(t, err)
	addr := rotationServer(t, kf)

	stop := make(chan struct{})
	reloaded := make(chan int)
	go func() {
		n := 0
		defer func() { reloaded <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n%2 == 0 {
				writeKeysFile(t, path, keyLine(t, "alice", kept))
			} else {
				writeKeysFile(t, path, both...)
			}
			if err := kf.Reload(); err != nil {
				t.Errorf("reload %d: %v", n, err)
				return
			}
			n++
		}
	}()
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := kept
			if i%2 == 1 {
				key = flapping
			}
			c, err := dialAs(t, addr, "alice", key)
			switch {
			case err == nil:
				c.Close()
			case i%2 == 1 && assert.ErrorIs(t, err, ErrAuth):
			default:
				t.Errorf("client %d with the kept key: %v", i, err)
			}
		}()
	}
	wg.Wait()
	close(stop)
	t.Logf("%d reloads during the handshakes", <-reloaded)
}

// TestKeyRotationRefusalsIndistinguishable: with users of one key and of
// two, a wrong key for either, and an unknown user, the server sends the
// same bytes (its preamble, 00 00, then the end of the stream) and fails
// with the same error but for the user name.
func TestKeyRotationRefusalsIndistinguishable(t *testing.T) {
	one, two1, two2, wrong := mustKey(t), mustKey(t), mustKey(t), mustKey(t)
	users := map[string][]Key{"one": {one}, "two": {two1, two2}}
	srv := &Server{Config: Config{Realm: atkRealm, KeepaliveInterval: -1},
		UserKeys: func(user string) []Key { return users[user] }}
	defer atkStopServer(srv)
	want := append(appendPreamble(nil, modeSecure), 0, 0)
	var shapes []string
	for _, tc := range []struct{ user string }{{"one"}, {"two"}, {"nobody"}} {
		_, hello := atkHello(t, wrong, tc.user, atkRealm, nil)
		out, serr := atkExchange(t, srv, hello)
		require.Equal(t, want, out, tc.user)
		require.ErrorIs(t, serr, ErrAuth, tc.user)
		shapes = append(shapes, strings.ReplaceAll(serr.Error(), `"`+tc.user+`"`, `"USER"`))
	}
	assert.Equal(t, shapes[0], shapes[1])
	assert.Equal(t, shapes[0], shapes[2])
}

// TestCandidateKeys: every user gets exactly MaxUserKeys candidates, the
// user's own keys first, then dummy keys that differ per slot, per user
// and per server secret; keys beyond MaxUserKeys are not tried.
func TestCandidateKeys(t *testing.T) {
	s1, s2 := mustKey(t), mustKey(t)
	a, b, c := mustKey(t), mustKey(t), mustKey(t)
	keys, real := candidateKeys(&s1, "u", nil)
	assert.Equal(t, [MaxUserKeys]bool{}, real)
	assert.NotEqual(t, keys[0], keys[1], "dummy keys differ per slot")
	other, _ := candidateKeys(&s1, "v", nil)
	assert.NotEqual(t, keys[0], other[0], "dummy keys differ per user")
	again, _ := candidateKeys(&s2, "u", nil)
	assert.NotEqual(t, keys[0], again[0], "dummy keys differ per server")
	same, _ := candidateKeys(&s1, "u", nil)
	assert.Equal(t, keys, same, "dummy keys are stable")

	keys, real = candidateKeys(&s1, "u", []Key{a})
	assert.Equal(t, [MaxUserKeys]bool{true, false}, real)
	assert.Equal(t, a, keys[0])
	assert.Equal(t, same[1], keys[1], "the slot left gets the user's dummy key")

	keys, real = candidateKeys(&s1, "u", []Key{a, b, c})
	assert.Equal(t, [MaxUserKeys]bool{true, true}, real)
	assert.Equal(t, [MaxUserKeys]Key{a, b}, keys)
}

// TestReadMessage1Candidates: message 1 opens under whichever real
// candidate is the client's key; never under a dummy slot, even if it
// holds the client's key; and the work (measured as bytes allocated) is
// the same for an unknown user, a wrong key and either slot.
func TestReadMessage1Candidates(t *testing.T) {
	secret := mustKey(t)
	k1, k2, wrong := mustKey(t), mustKey(t), mustKey(t)
	prologue := securePrologue(atkRealm, "u")
	m1 := func(key Key) []byte {
		ns, err := newNoiseState(prologue, nil)
		require.NoError(t, err)
		return ns.writeMessage1(&key, handshakePayload)
	}
	try := func(own []Key, msg []byte) error {
		keys, real := candidateKeys(&secret, "u", own)
		ns, err := newNoiseState(prologue, nil)
		require.NoError(t, err)
		_, err = ns.readMessage1Candidates(&keys, real, msg)
		return err
	}
	require.NoError(t, try([]Key{k1, k2}, m1(k1)))
	require.NoError(t, try([]Key{k1, k2}, m1(k2)))
	require.ErrorIs(t, try([]Key{k1, k2}, m1(wrong)), errNoCandidate)
	require.ErrorIs(t, try(nil, m1(k1)), errNoCandidate)
	// A dummy slot never opens a message, even one made with its key.
	dummies, _ := candidateKeys(&secret, "u", nil)
	require.ErrorIs(t, try(nil, m1(dummies[0])), errNoCandidate)
	require.ErrorIs(t, try([]Key{k1}, m1(dummies[1])), errNoCandidate)

	// The state after a success is the real key's: message 2 and split
	// agree with the client's.
	cli, err := newNoiseState(prologue, nil)
	require.NoError(t, err)
	msg := cli.writeMessage1(&k2, handshakePayload)
	keys, real := candidateKeys(&secret, "u", []Key{k1, k2})
	srv, err := newNoiseState(prologue, nil)
	require.NoError(t, err)
	_, err = srv.readMessage1Candidates(&keys, real, msg)
	require.NoError(t, err)
	m2, err := srv.writeMessage2(handshakePayload)
	require.NoError(t, err)
	_, err = cli.readMessage2(m2)
	require.NoError(t, err)
	cs, cr := cli.split()
	ss, sr := srv.split()
	assert.Equal(t, cs, ss)
	assert.Equal(t, cr, sr)

	wrongMsg := m1(wrong)
	cost := func(own []Key) uint64 {
		return atkAllocBytes(200, func() { try(own, wrongMsg) })
	}
	unknown, oneKey, twoKeys := cost(nil), cost([]Key{k1}), cost([]Key{k1, k2})
	assert.Equal(t, unknown, oneKey, "an unknown user and a user with one key")
	assert.Equal(t, unknown, twoKeys, "an unknown user and a user with two keys")
}
