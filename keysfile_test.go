package bokbok_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/bokbok-go/bokbok"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newKeyText(t *testing.T) string {
	t.Helper()
	k, err := bokbok.GenerateKey()
	require.NoError(t, err)
	b, err := k.MarshalText()
	require.NoError(t, err)
	return string(b)
}

func keysFileAt(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users.txt")
	require.NoError(t, os.WriteFile(path, []byte(content), mode))
	require.NoError(t, os.Chmod(path, mode)) // whatever the umask
	return path
}

// TestKeysFileReads: users, comments, blank lines, white space, and a
// user with two keys.
func TestKeysFileReads(t *testing.T) {
	a, b1, b2 := newKeyText(t), newKeyText(t), newKeyText(t)
	path := keysFileAt(t, fmt.Sprintf("# the users\n\nalice %s\n  bob\t%s  \n# bob's new key\nbob %s\n", a, b1, b2), 0o600)
	kf, err := bokbok.OpenKeysFile(path)
	require.NoError(t, err)
	assert.Equal(t, path, kf.Path())
	assert.Equal(t, 2, kf.Users())
	assert.Equal(t, 1, kf.Rotating())
	assert.False(t, kf.ReadableByOthers())

	parse := func(s string) bokbok.Key {
		k, err := bokbok.ParseKey(s)
		require.NoError(t, err)
		return k
	}
	assert.Equal(t, []bokbok.Key{parse(a)}, kf.UserKeys("alice"))
	assert.Equal(t, []bokbok.Key{parse(b1), parse(b2)}, kf.UserKeys("bob"))
	assert.Nil(t, kf.UserKeys("carol"))
	k, ok := kf.UserKey("bob")
	assert.True(t, ok)
	assert.Equal(t, parse(b2), k, "the last key listed")
	_, ok = kf.UserKey("carol")
	assert.False(t, ok)

	// The slice returned is the caller's.
	keys := kf.UserKeys("alice")
	keys[0] = bokbok.Key{}
	assert.Equal(t, []bokbok.Key{parse(a)}, kf.UserKeys("alice"))
}

// TestKeysFileErrors: every bad line is reported with its line number and
// what is wrong, never with a key; a file with no users is an error too.
func TestKeysFileErrors(t *testing.T) {
	k1, k2, k3 := newKeyText(t), newKeyText(t), newKeyText(t)
	cases := []struct {
		name    string
		content string
		want    []string // one per problem, after "PATH"
	}{
		{name: "one field", content: "alice\n", want: []string{`:1: want "USER KEY" (two fields separated by spaces), got 1 field`}},
		{name: "three fields", content: "alice " + k1 + " extra\n", want: []string{":1: want \"USER KEY\" (two fields separated by spaces), got 3 fields"}},
		{name: "not a key", content: "# c\nalice " + k1[:40] + "\n", want: []string{`:2: the key of user "alice" is not a key: 40 characters, want 44`}},
		{name: "not base64", content: "alice " + strings.Repeat("!", 44) + "\n", want: []string{`:1: the key of user "alice" is not a key: not standard base64`}},
		{name: "long user", content: strings.Repeat("u", 256) + " " + k1 + "\n", want: []string{":1: user name of 256 bytes; at most 255"}},
		{name: "same key twice", content: "alice " + k1 + "\n\nalice " + k1 + "\n", want: []string{`:3: the same key again for user "alice" (first on line 1)`}},
		{name: "three keys", content: "alice " + k1 + "\nalice " + k2 + "\nalice " + k3 + "\n",
			want: []string{`:3: more than 2 keys for user "alice" (first on line 1): a user has at most 2`}},
		{name: "no users", content: "# nobody yet\n\n", want: []string{`: no users: add a "USER KEY" line for each user`}},
		{name: "empty", content: "", want: []string{": no users"}},
		{name: "several", content: "a\nb " + k1 + "\nc x\n", want: []string{":1: want", `:3: the key of user "c"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := keysFileAt(t, tc.content, 0o600)
			kf, err := bokbok.OpenKeysFile(path)
			require.Error(t, err)
			assert.Nil(t, kf)
			var kerr *bokbok.KeysFileError
			require.True(t, errors.As(err, &kerr), "%T", err)
			assert.Equal(t, path, kerr.Path)
			lines := strings.Split(err.Error(), "\n")
			require.Len(t, lines, len(tc.want), err.Error())
			for i, w := range tc.want {
				assert.True(t, strings.HasPrefix(lines[i], path+w), "line %d: %q, want prefix %q", i, lines[i], path+w)
			}
			for _, k := range []string{k1, k2, k3, k1[:40]} {
				assert.NotContains(t, err.Error(), k, "a key in the error")
			}
		})
	}
}

// TestKeysFileErrorsBounded: at most 20 bad lines are listed, then how
// many more there are.
func TestKeysFileErrorsBounded(t *testing.T) {
	path := keysFileAt(t, strings.Repeat("bad\n", 50), 0o600)
	_, err := bokbok.OpenKeysFile(path)
	var kerr *bokbok.KeysFileError
	require.ErrorAs(t, err, &kerr)
	assert.Len(t, kerr.Problems, 20)
	assert.Equal(t, 30, kerr.Omitted)
	assert.True(t, strings.HasSuffix(err.Error(), path+": and 30 more bad lines"), err.Error())
	assert.Equal(t, 20, kerr.Problems[19].Line)
}

// TestKeysFileMissing: a file that cannot be read is an error matching
// the file system's.
func TestKeysFileMissing(t *testing.T) {
	_, err := bokbok.OpenKeysFile(filepath.Join(t.TempDir(), "none.txt"))
	require.ErrorIs(t, err, fs.ErrNotExist)
}

// TestKeysFilePermissions: a file readable by others is reported, so a
// server can warn about it.
func TestKeysFilePermissions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permission bits")
	}
	line := "alice " + newKeyText(t) + "\n"
	for _, tc := range []struct {
		mode os.FileMode
		want bool
	}{{0o600, false}, {0o400, false}, {0o640, true}, {0o644, true}, {0o604, true}} {
		kf, err := bokbok.OpenKeysFile(keysFileAt(t, line, tc.mode))
		require.NoError(t, err)
		assert.Equal(t, tc.want, kf.ReadableByOthers(), "mode %v", tc.mode)
	}
}

// TestKeysFileReloadKeepsTheKeysOnError: a reload of a broken file fails
// and leaves the keys read before in use; a good one replaces them.
func TestKeysFileReloadKeepsTheKeysOnError(t *testing.T) {
	a, b := newKeyText(t), newKeyText(t)
	path := keysFileAt(t, "alice "+a+"\n", 0o600)
	kf, err := bokbok.OpenKeysFile(path)
	require.NoError(t, err)

	require.NoError(t, os.WriteFile(path, []byte("alice "+a+"\nbob\n"), 0o600))
	var kerr *bokbok.KeysFileError
	require.ErrorAs(t, kf.Reload(), &kerr)
	require.NoError(t, os.Remove(path))
	require.ErrorIs(t, kf.Reload(), fs.ErrNotExist)
	assert.Equal(t, 1, kf.Users())
	assert.Len(t, kf.UserKeys("alice"), 1)

	require.NoError(t, os.WriteFile(path, []byte("bob "+b+"\n"), 0o644))
	require.NoError(t, kf.Reload())
	assert.Nil(t, kf.UserKeys("alice"))
	assert.Len(t, kf.UserKeys("bob"), 1)
	assert.Equal(t, runtime.GOOS != "windows", kf.ReadableByOthers())
}

// TestKeysFileZero: a KeysFile not made by OpenKeysFile knows no users.
func TestKeysFileZero(t *testing.T) {
	var kf bokbok.KeysFile
	assert.Nil(t, kf.UserKeys("alice"))
	_, ok := kf.UserKey("alice")
	assert.False(t, ok)
	assert.Zero(t, kf.Users())
	assert.Zero(t, kf.Rotating())
	assert.False(t, kf.ReadableByOthers())
}
