package ocap

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// readStoreFile reads a store file as JSON.
func readStoreFile(t *testing.T, path string) storeFile {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var f storeFile
	require.NoError(t, json.Unmarshal(b, &f))
	return f
}

func requireMode0600(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the store holds secrets")
}

// requireOnlyFile checks that the directory holds the store and nothing
// else (no temporary files left behind).
func requireOnlyFile(t *testing.T, path string) {
	t.Helper()
	es, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	require.Equal(t, []string{filepath.Base(path)}, names)
}

func sortedLabels(st *Store) []string {
	ls := st.Labels()
	slices.Sort(ls)
	return ls
}

// TestStoreRestartedServer registers objects under labels, restarts the
// server (a new Node, Store and bokbok.Server on the same file and
// address) and enlivens the old URI against it.
func TestStoreRestartedServer(t *testing.T) {
	ctx := srCtx(t)
	path := filepath.Join(t.TempDir(), "sturdyrefs.json")
	st, err := OpenStore(path)
	require.NoError(t, err)
	requireMode0600(t, path)
	require.Empty(t, st.Labels())
	require.Equal(t, storeFile{Version: 1, Swiss: map[string]string{}}, readStoreFile(t, path))

	vat1 := NewVat("bob-1")
	defer vat1.Close()
	bob := &Node{Store: st}
	defer bob.Close()
	h := srServe(t, bob, srAddr(t, "tcp"), "", nil, nil)
	bob.Addr = h.addr.String()
	sr, err := bob.RegisterAs("greeter", vat1.Spawn(&srEcho{"first Bob"}))
	require.NoError(t, err)
	uri := sr.String()
	again, err := bob.RegisterAs("greeter", vat1.Spawn(&srEcho{"first Bob"}))
	require.NoError(t, err)
	require.Equal(t, uri, again.String(), "a label names one swiss number")
	other, err := bob.RegisterAs("other", vat1.Spawn(&srEcho{"other"}))
	require.NoError(t, err)
	require.NotEqual(t, sr.Swiss, other.Swiss)
	plain, err := bob.Register(vat1.Spawn(&srEcho{"unlabelled"}))
	require.NoError(t, err)

	require.Equal(t, []string{"greeter", "other"}, sortedLabels(st), "Register does not store")
	require.Equal(t, storeFile{Version: 1, Swiss: map[string]string{
		"greeter": swissText(sr.Swiss),
		"other":   swissText(other.Swiss),
	}}, readStoreFile(t, path))
	requireMode0600(t, path)
	requireOnlyFile(t, path)

	alice := &Node{}
	defer alice.Close()
	g, err := alice.Enliven(ctx, sr)
	require.NoError(t, err)
	srHello(ctx, t, g, "alice", "first Bob")

	// The server stops; a new one starts from the store.
	as := srOnlySession(t, alice)
	h.stop()
	require.NoError(t, bob.Close())
	vat1.Close()
	srWaitDone(ctx, t, as)
	_, err = g.Send("hello", "alice").Await(ctx)
	require.ErrorIs(t, err, ErrDisconnected)

	st2, err := OpenStore(path)
	require.NoError(t, err)
	require.Equal(t, []string{"greeter", "other"}, sortedLabels(st2))
	vat2 := NewVat("bob-2")
	defer vat2.Close()
	bob2 := &Node{Store: st2, Addr: bob.Addr}
	defer bob2.Close()
	sr2, err := bob2.RegisterAs("greeter", vat2.Spawn(&srEcho{"second Bob"}))
	require.NoError(t, err)
	require.Equal(t, uri, sr2.String(), "the restarted server serves the same sturdyref")
	h2 := srServe(t, bob2, h.addr, "", nil, nil)
	defer h2.stop()

	// The old URI, as a client kept it, works against the new server: for
	// a client that had enlivened it before and for a new one.
	old, err := ParseSturdyref(uri)
	require.NoError(t, err)
	g2, err := alice.Enliven(ctx, old)
	require.NoError(t, err)
	srHello(ctx, t, g2, "alice", "second Bob")
	carol := &Node{}
	defer carol.Close()
	g3, err := carol.Enliven(ctx, old)
	require.NoError(t, err)
	srHello(ctx, t, g3, "carol", "second Bob")

	// What the new server did not register again is unknown, stored or
	// not; the store keeps its label for a later RegisterAs.
	_, err = alice.Enliven(ctx, other)
	require.ErrorIs(t, err, ErrUnknownSturdyref)
	_, err = carol.Enliven(ctx, plain)
	require.ErrorIs(t, err, ErrUnknownSturdyref)
	other2, err := bob2.RegisterAs("other", vat2.Spawn(&srEcho{"other again"}))
	require.NoError(t, err)
	require.Equal(t, other.String(), other2.String())
	o, err := alice.Enliven(ctx, other)
	require.NoError(t, err)
	srHello(ctx, t, o, "alice", "other again")

	// Unregister revokes the sturdyref and removes its label from the file.
	require.NoError(t, bob2.Unregister(old))
	require.Equal(t, []string{"other"}, sortedLabels(st2))
	require.Equal(t, storeFile{Version: 1, Swiss: map[string]string{"other": swissText(other.Swiss)}}, readStoreFile(t, path))
	requireMode0600(t, path)
	requireOnlyFile(t, path)
	_, err = alice.Enliven(ctx, old)
	require.ErrorIs(t, err, ErrUnknownSturdyref)
	srHello(ctx, t, g2, "alice", "second Bob") // live references stay live
	st3, err := OpenStore(path)
	require.NoError(t, err)
	require.Equal(t, []string{"other"}, sortedLabels(st3))
	require.ErrorIs(t, bob2.Unregister(old), ErrUnknownSturdyref)

	// The label, registered again, names a new swiss number.
	sr4, err := bob2.RegisterAs("greeter", vat2.Spawn(&srEcho{"third Bob"}))
	require.NoError(t, err)
	require.NotEqual(t, uri, sr4.String())
	_, err = carol.Enliven(ctx, old)
	require.ErrorIs(t, err, ErrUnknownSturdyref)
	g4, err := carol.Enliven(ctx, sr4)
	require.NoError(t, err)
	srHello(ctx, t, g4, "carol", "third Bob")
	require.Equal(t, swissText(sr4.Swiss), readStoreFile(t, path).Swiss["greeter"])
}

func TestStoreFileMode(t *testing.T) {
	// A store file made by hand with a looser mode is tightened by the
	// first change.
	path := filepath.Join(t.TempDir(), "store.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"version": 1, "swiss": {"a": "`+swissText(srSwiss(SwissSize, 5))+`"}}`), 0o644))
	require.NoError(t, os.Chmod(path, 0o644))
	st, err := OpenStore(path)
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, st.Labels())
	s, err := st.swissFor("a")
	require.NoError(t, err)
	require.Equal(t, srSwiss(SwissSize, 5), s)
	_, err = st.swissFor("b")
	require.NoError(t, err)
	requireMode0600(t, path)
	requireOnlyFile(t, path)
	require.NoError(t, st.forget("a"))
	require.NoError(t, st.forget("a"), "forgetting a missing label is not an error")
	require.Equal(t, []string{"b"}, st.Labels())
	requireMode0600(t, path)
}

func TestStoreConcurrentRegisterAs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.json")
	st, err := OpenStore(path)
	require.NoError(t, err)
	vat := NewVat("v")
	defer vat.Close()
	n := &Node{Store: st, Addr: "127.0.0.1:7000"}
	r := vat.Spawn(&srEcho{"x"})
	const k = 16
	srs := make([]Sturdyref, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range k {
		wg.Go(func() { srs[i], errs[i] = n.RegisterAs(fmt.Sprint("label-", i%8), r) })
	}
	wg.Wait()
	for i := range k {
		require.NoError(t, errs[i])
		require.Equal(t, srs[i%8].String(), srs[i].String(), "one swiss number per label")
	}
	f := readStoreFile(t, path)
	require.Len(t, f.Swiss, 8)
	for i := range 8 {
		require.Equal(t, swissText(srs[i].Swiss), f.Swiss[fmt.Sprint("label-", i)])
	}
	requireOnlyFile(t, path)
}

func TestStoreErrors(t *testing.T) {
	dir := t.TempDir()
	good := swissText(srSwiss(SwissSize, 1))
	cases := []struct {
		name, content, why string
	}{
		{"not json", `{"version": 1, "swiss": {`, "is not valid JSON"},
		{"empty file", ``, "is not valid JSON"},
		{"wrong type", `{"version": 1, "swiss": {"a": 7}}`, "is not valid JSON"},
		{"a list", `[1, 2]`, "is not valid JSON"},
		{"wrong version", `{"version": 2, "swiss": {}}`, "has version 2, want 1"},
		{"no version", `{"swiss": {"a": "` + good + `"}}`, "has version 0, want 1"},
		{"bad base64", `{"version": 1, "swiss": {"a": "` + good + `", "b": "not*base64"}}`, `label "b" has a malformed swiss number`},
		{"padded base64", `{"version": 1, "swiss": {"c": "` + good + `="}}`, `label "c" has a malformed swiss number`},
		{"short swiss", `{"version": 1, "swiss": {"d": "` + swissText(srSwiss(minSwissSize-1, 1)) + `"}}`, `label "d" has a malformed swiss number`},
		{"empty swiss", `{"version": 1, "swiss": {"e": ""}}`, `label "e" has a malformed swiss number`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name+".json")
			require.NoError(t, os.WriteFile(path, []byte(c.content), 0o600))
			st, err := OpenStore(path)
			require.Nil(t, st)
			require.ErrorContains(t, err, "ocap: store "+path)
			require.ErrorContains(t, err, c.why)
			b, rerr := os.ReadFile(path)
			require.NoError(t, rerr)
			require.Equal(t, c.content, string(b), "a bad store is left as it was")
		})
	}

	// A store that cannot be read or created.
	_, err := OpenStore(dir)
	require.ErrorContains(t, err, "ocap: opening store")
	_, err = OpenStore(filepath.Join(dir, "no", "such", "dir", "store.json"))
	require.ErrorContains(t, err, "ocap: saving store")

	// RegisterAs needs a Store; Register and RegisterAs need an Addr and
	// a reference.
	vat := NewVat("v")
	defer vat.Close()
	r := vat.Spawn(&srEcho{"x"})
	_, err = (&Node{Addr: "127.0.0.1:7000"}).RegisterAs("a", r)
	require.ErrorContains(t, err, "RegisterAs needs Node.Store")
	st, err := OpenStore(filepath.Join(dir, "fine.json"))
	require.NoError(t, err)
	_, err = (&Node{Store: st}).RegisterAs("a", r)
	require.ErrorContains(t, err, "Node.Addr is empty")
	_, err = (&Node{Store: st, Addr: "127.0.0.1:7000"}).RegisterAs("a", Ref{})
	require.ErrorContains(t, err, "zero Ref")
}
