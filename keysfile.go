package bokbok

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
)

// A keys file lists the users of a secure server (PROTOCOL.md, "Keys
// files"): one "USER KEY" line per key, KEY in its text form; blank lines
// and lines starting with "#" are ignored. A user may have up to
// MaxUserKeys lines, for a key rotation.

// maxKeysFileErrors is how many bad lines a KeysFileError lists.
const maxKeysFileErrors = 20

// KeysFile holds the users and keys of a keys file: a text file with one
// "USER KEY" line per key (KEY as "bokbok keygen" prints it, the standard
// base64 of the 32 bytes), where blank lines and lines starting with "#"
// are ignored. A user with two lines has two valid keys: that is how a key
// is rotated without downtime (add the new key, let clients move to it,
// remove the old one, reloading after each edit).
//
// Its UserKeys method is meant for Server.UserKeys (and UserKey for
// Server.UserKey, where one key per user is enough). Reload re-reads the
// file and replaces the keys at once, while connections are being
// accepted; a handshake sees either the old keys or the new, never a mix.
// Its methods may be called from many goroutines at once. Make one with
// OpenKeysFile; a zero KeysFile knows no users.
type KeysFile struct {
	path string
	cur  atomic.Pointer[keysSnapshot]
}

// keysSnapshot is one reading of a keys file; never modified once
// published.
type keysSnapshot struct {
	users    map[string][]Key
	rotating int  // users with more than one key
	exposed  bool // the file was readable by other users when read
}

// OpenKeysFile reads the keys file at path. A file with a bad line, or
// with no users, is an error: a *KeysFileError listing the bad lines,
// which never shows a key.
func OpenKeysFile(path string) (*KeysFile, error) {
	f := &KeysFile{path: path}
	if err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Reload reads the file again and, if it is good, replaces the keys in
// one step. If it is not (it cannot be read, a line is bad, it lists no
// users), the keys read before stay in use and the error says why.
func (f *KeysFile) Reload() error {
	snap, err := readKeysFile(f.path)
	if err != nil {
		return err
	}
	f.cur.Store(snap)
	return nil
}

// snap returns the keys in use: none for a KeysFile not made by
// OpenKeysFile, so that its zero value refuses every user.
func (f *KeysFile) snap() *keysSnapshot {
	if s := f.cur.Load(); s != nil {
		return s
	}
	return &keysSnapshot{}
}

// Path returns the file's path.
func (f *KeysFile) Path() string { return f.path }

// UserKeys returns the keys of user, in the file's order (a fresh slice
// each time), or nil if the file does not list the user.
func (f *KeysFile) UserKeys(user string) []Key {
	keys := f.snap().users[user]
	if keys == nil {
		return nil
	}
	return append([]Key(nil), keys...)
}

// UserKey returns the last key the file lists for user (during a
// rotation, the newer one, if it was added below the older): a server
// whose UserKey is this method accepts one key per user. Use UserKeys to
// accept both keys of a rotation.
func (f *KeysFile) UserKey(user string) (Key, bool) {
	keys := f.snap().users[user]
	if len(keys) == 0 {
		return Key{}, false
	}
	return keys[len(keys)-1], true
}

// Users returns how many users the file lists.
func (f *KeysFile) Users() int { return len(f.snap().users) }

// Rotating returns how many users the file lists with more than one key.
func (f *KeysFile) Rotating() int { return f.snap().rotating }

// ReadableByOthers reports whether, when last read, the file could be read
// by users other than its owner (its mode has group or other bits set). A
// server should warn about it: anyone who can read the file can pose as
// any of its users. It is always false on Windows.
func (f *KeysFile) ReadableByOthers() bool { return f.snap().exposed }

// KeysFileError reports the bad lines of a keys file. Its messages name
// the line and what is wrong with it, never a key.
type KeysFileError struct {
	Path     string
	Problems []KeysFileProblem // at most 20, then Omitted counts the rest
	Omitted  int               // bad lines not listed
}

// KeysFileProblem is one bad line of a keys file. Line is 0 for a problem
// with the whole file.
type KeysFileProblem struct {
	Line    int
	Message string
}

// Error lists the problems, one per line, each as "PATH:LINE: MESSAGE".
func (e *KeysFileError) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		if p.Line > 0 {
			fmt.Fprintf(&b, "%s:%d: %s", e.Path, p.Line, p.Message)
		} else {
			fmt.Fprintf(&b, "%s: %s", e.Path, p.Message)
		}
	}
	if e.Omitted > 0 {
		fmt.Fprintf(&b, "\n%s: and %d more bad line%s", e.Path, e.Omitted, plural(e.Omitted))
	}
	return b.String()
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// readKeysFile reads and checks a keys file.
func readKeysFile(path string) (*keysSnapshot, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bokbok: reading the keys file: %w", err)
	}
	defer file.Close()
	st, err := file.Stat()
	if err != nil {
		return nil, fmt.Errorf("bokbok: reading the keys file: %w", err)
	}
	data, err := io.ReadAll(file)
	defer clear(data)
	if err != nil {
		return nil, fmt.Errorf("bokbok: reading the keys file: %w", err)
	}
	snap := &keysSnapshot{users: make(map[string][]Key)}
	snap.exposed = runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0
	kerr := &KeysFileError{Path: path}
	bad := func(line int, format string, a ...any) {
		if len(kerr.Problems) == maxKeysFileErrors {
			kerr.Omitted++
			return
		}
		kerr.Problems = append(kerr.Problems, KeysFileProblem{Line: line, Message: fmt.Sprintf(format, a...)})
	}
	firstLine := make(map[string]int) // user -> the line of the user's first key
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 64<<10)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			bad(n, "want \"USER KEY\" (two fields separated by spaces), got %d field%s", len(fields), plural(len(fields)))
			continue
		}
		user := fields[0]
		if len(user) > 255 {
			bad(n, "user name of %d bytes; at most 255", len(user))
			continue
		}
		key, err := ParseKey(fields[1])
		if err != nil {
			bad(n, "the key of user %q is not a key: %s (make one with \"bokbok keygen\")", user, strings.TrimPrefix(err.Error(), "bokbok: bad key: "))
			continue
		}
		keys := snap.users[user]
		switch {
		case slices.ContainsFunc(keys, key.Equal):
			bad(n, "the same key again for user %q (first on line %d)", user, firstLine[user])
			continue
		case len(keys) == MaxUserKeys:
			bad(n, "more than %d keys for user %q (first on line %d): a user has at most %d, the old and the new during a rotation", MaxUserKeys, user, firstLine[user], MaxUserKeys)
			continue
		case len(keys) == 0:
			firstLine[user] = n
		}
		snap.users[user] = append(keys, key)
	}
	if err := sc.Err(); err != nil {
		bad(n+1, "%v", err)
	}
	if len(kerr.Problems) > 0 {
		return nil, kerr
	}
	if len(snap.users) == 0 {
		bad(0, "no users: add a \"USER KEY\" line for each user (make keys with \"bokbok keygen\")")
		return nil, kerr
	}
	for _, keys := range snap.users {
		if len(keys) > 1 {
			snap.rotating++
		}
	}
	return snap, nil
}
