package bokbok_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/bokbok-go/bokbok"
)

// A secure server whose users are in a keys file, reloaded on SIGHUP: to
// rotate a user's key, add a line with the new key, reload, let the
// clients move to it, then remove the old line and reload again.
func ExampleKeysFile() {
	dir, err := os.MkdirTemp("", "keys")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "users.txt")
	oldKey, _ := bokbok.GenerateKey()
	newKey, _ := bokbok.GenerateKey()
	oldText, _ := oldKey.MarshalText()
	newText, _ := newKey.MarshalText()
	// alice is halfway through a rotation: both keys are valid.
	lines := fmt.Sprintf("# user key\nalice %s\nalice %s\n", oldText, newText)
	if err := os.WriteFile(path, []byte(lines), 0o600); err != nil {
		log.Fatal(err)
	}

	users, err := bokbok.OpenKeysFile(path)
	if err != nil {
		log.Fatal(err) // each bad line as PATH:LINE: what is wrong
	}
	if users.ReadableByOthers() {
		log.Printf("%s is readable by other users: chmod 600 it", path)
	}
	srv := &bokbok.Server{UserKeys: users.UserKeys}
	ln, err := bokbok.Listen("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Wait()
	defer srv.Close()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer close(hup) // after signal.Stop: ends the goroutine below
	defer signal.Stop(hup)
	go func() {
		for range hup {
			if err := users.Reload(); err != nil {
				log.Printf("keeping the previous keys: %v", err)
			}
		}
	}()

	for _, key := range []bokbok.Key{oldKey, newKey} {
		c, err := bokbok.Dial(context.Background(), ln.Addr().String(), &bokbok.Config{User: "alice", Key: &key})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("alice is in")
		c.Close()
	}
	fmt.Println(users.Users(), "user,", users.Rotating(), "rotating")
	// Output:
	// alice is in
	// alice is in
	// 1 user, 1 rotating
}
