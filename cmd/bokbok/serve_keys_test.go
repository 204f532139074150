package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
)

// waitForCount waits until the log contains s n times, for 10 s at most.
func (l *cliLog) waitForCount(t *testing.T, s string, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); strings.Count(l.String(), s) < n; {
		if time.Now().After(deadline) {
			t.Fatalf("the server logged %q fewer than %d times; its log:\n%s", s, n, l.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCLIServeReloadsKeysOnSIGHUP: a running "bokbok serve" re-reads its
// keys file on SIGHUP, so a key is rotated without a restart: the new key
// is added (both work), then the old removed (only the new works). A
// broken file on reload is reported, line by line, and the keys in use
// stay.
func TestCLIServeReloadsKeysOnSIGHUP(t *testing.T) {
	oldKey, oldText := cliKey(t)
	newKey, newText := cliKey(t)
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.txt")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(keys+".tmp", []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(keys+".tmp", keys); err != nil {
			t.Fatal(err)
		}
	}
	write("alice " + oldText + "\n")
	s := cliServe(t, "--listen", "127.0.0.1:0", "--keys", keys)
	reloads := 0
	hangup := func(wantLog string) {
		t.Helper()
		reloads++
		if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		s.log.waitForCount(t, wantLog, 1)
	}
	dial := func(key bokbok.Key) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := bokbok.Dial(ctx, s.addr, &bokbok.Config{User: "alice", Key: &key})
		if err == nil {
			c.Close()
		}
		return err
	}
	expect := func(key bokbok.Key, name string, ok bool) {
		t.Helper()
		err := dial(key)
		switch {
		case ok && err != nil:
			t.Fatalf("the %s key: %v", name, err)
		case !ok && err == nil:
			t.Fatalf("the %s key was accepted", name)
		case !ok && !strings.Contains(err.Error(), "authentication failed"):
			t.Fatalf("the %s key: %v, want authentication failed", name, err)
		}
	}
	expect(oldKey, "old", true)
	expect(newKey, "new", false)

	write(fmt.Sprintf("alice %s\nalice %s\n", oldText, newText))
	hangup("users=1 rotating=1")
	expect(oldKey, "old", true)
	expect(newKey, "new", true)

	write("alice " + newText + "\nbob\n")
	hangup("keys.txt:2: want \\\"USER KEY\\\"")
	if !strings.Contains(s.log.String(), "keeping the previous keys") {
		t.Fatalf("the log does not say the keys stay:\n%s", s.log.String())
	}
	expect(oldKey, "old", true)
	expect(newKey, "new", true)

	write("alice " + newText + "\n")
	if err := os.Chmod(keys, 0o644); err != nil {
		t.Fatal(err)
	}
	hangup("users=1 rotating=0")
	s.log.waitFor(t, "readable by other users")
	expect(oldKey, "old", false)
	expect(newKey, "new", true)

	for _, k := range []string{oldText, newText} {
		if strings.Contains(s.log.String(), k) {
			t.Fatal("the log shows a key")
		}
	}
	if code := s.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit status %d after SIGTERM", code)
	}
}
