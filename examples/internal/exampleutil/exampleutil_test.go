package exampleutil

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bokbok-go/bokbok"
)

// keyText is a key's text form.
const keyText = "mO8B9qXKa2rM7CcK4P0u0cXyYv3s0h6m3n8Vd2J2b1Q="

func TestReadKey(t *testing.T) {
	key, err := bokbok.ParseKey(keyText)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "demo.key")
	if err := os.WriteFile(file, []byte(keyText+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		text, file string
		given      bool
		err        string // "" for none
	}{
		{"", "", false, ""},
		{keyText, "", true, ""},
		{"", file, true, ""}, // the newline an editor leaves is ignored
		{keyText, file, true, "give -key or -key-file, not both"},
		{"", filepath.Join(dir, "missing.key"), true, "reading the key: "},
		{"not a key", "", true, "bad key"},
	} {
		got, given, err := readKey(tc.text, tc.file)
		switch {
		case given != tc.given:
			t.Errorf("readKey(%q, %q): given %v, want %v", tc.text, tc.file, given, tc.given)
		case tc.err == "" && err != nil:
			t.Errorf("readKey(%q, %q): %v", tc.text, tc.file, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("readKey(%q, %q): error %v, want one containing %q", tc.text, tc.file, err, tc.err)
		case tc.err == "" && given && got != key:
			t.Errorf("readKey(%q, %q) returned another key", tc.text, tc.file)
		}
	}
}

// TestShellQuote checks that a POSIX shell reads each quoted string back
// as it was, and that plain words are left as they are.
func TestShellQuote(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh:", err)
	}
	words := []string{"demo", "./cars.sock", "localhost:7070", "/tmp/bokbok-carfactory.sock"}
	for _, w := range words {
		if q := shellQuote(w); q != w {
			t.Errorf("shellQuote(%q) = %s, want it unquoted", w, q)
		}
	}
	for _, s := range append(words, "", "my realm", "o'neil", `"$HOME" and \n`, "a;b|c&d", "*") {
		out, err := exec.Command(sh, "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("sh reads shellQuote(%q) = %s as %q (%v)", s, shellQuote(s), out, err)
		}
	}
}

func TestKeysModeAndHint(t *testing.T) {
	secure := &Keys{User: "demo", Realm: "r"}
	insecure := &Keys{Insecure: true}
	if got, want := secure.Mode(), `secure: user "demo", realm "r"`; got != want {
		t.Errorf("Mode() = %q, want %q", got, want)
	}
	if got := insecure.Mode(); got != "insecure" {
		t.Errorf("Mode() with -insecure = %q, want %q", got, "insecure")
	}

	auth := fmt.Errorf("%w: the server refused user", bokbok.ErrAuth)
	mode := fmt.Errorf("%w: the peer wants ...", bokbok.ErrMode)
	for _, tc := range []struct {
		k    *Keys
		err  error
		want string
	}{
		{secure, nil, ""},
		{secure, errors.New("something else"), ""},
		{secure, auth, "check -user, -key or -key-file, and -realm"},
		{secure, mode, "the server is insecure: use -insecure (and no key)"},
		{insecure, mode, "the server is secure: give -key or -key-file instead of -insecure"},
	} {
		if got := tc.k.Hint(tc.err); got != tc.want {
			t.Errorf("Hint(%v) with -insecure %v = %q, want %q", tc.err, tc.k.Insecure, got, tc.want)
		}
	}
}

func TestListenForSturdyrefs(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)

	// A Unix socket given as a relative path: the sturdyrefs name its
	// absolute path.
	ln, addr, err := ListenForSturdyrefs("./node.sock", "")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	a, err := bokbok.ParseAddr(addr)
	if err != nil || a.Network != "unix" || a.Address != filepath.Join(dir, "node.sock") {
		t.Errorf("the address of ./node.sock is %q (%v), want the socket's absolute path", addr, err)
	}

	// TCP on a free port: the port it got.
	ln, addr, err = ListenForSturdyrefs("127.0.0.1:0", "")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if addr != ln.Addr().String() || strings.HasSuffix(addr, ":0") {
		t.Errorf("the address of 127.0.0.1:0 is %q, want %q", addr, ln.Addr())
	}

	// -public wins, if it parses.
	ln, addr, err = ListenForSturdyrefs("127.0.0.1:0", "example.com:7000")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if addr != "example.com:7000" {
		t.Errorf("the address with -public is %q, want example.com:7000", addr)
	}
	if _, _, err := ListenForSturdyrefs("127.0.0.1:0", "bogus"); err == nil || !strings.HasPrefix(err.Error(), "-public: ") {
		t.Errorf("a bad -public: got %v, want an error naming -public", err)
	}
}
