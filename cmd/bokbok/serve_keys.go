package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/bokbok-go/bokbok"
)

// The keys file of the commands that serve securely ("bokbok serve
// --keys", "bokbok pipes hub --keys"): opened with bokbok.OpenKeysFile,
// checked for other users' eyes, and re-read on SIGHUP.

// noUsersInsecure is what "bokbok serve" adds to the problem of a keys file
// with no users: it can serve without one.
const noUsersInsecure = ", or serve with --insecure"

// keysFileError renders an error of the keys file, one problem per line.
// noUsers is appended to the problem of a file that lists no users ("" to
// add nothing).
func keysFileError(err error, noUsers string) string {
	var kerr *bokbok.KeysFileError
	if errors.As(err, &kerr) {
		if len(kerr.Problems) == 1 && kerr.Problems[0].Line == 0 { // no users
			return kerr.Error() + noUsers
		}
		return kerr.Error()
	}
	return "--keys: " + trimBokbok(err)
}

// openKeys opens the keys file at path for the command name ("serve",
// "pipes hub"). If it does not read, it reports each problem on stderr as
// a line "bokbok NAME: PROBLEM" and returns false; the command should
// then exit with exitUsage.
func openKeys(e *env, name, path, noUsers string) (*bokbok.KeysFile, bool) {
	users, err := bokbok.OpenKeysFile(path)
	if err != nil {
		for _, line := range strings.Split(keysFileError(err, noUsers), "\n") {
			fmt.Fprintf(e.stderr, "bokbok %s: %s\n", name, line)
		}
		return nil, false
	}
	return users, true
}

// watchKeys warns if the keys file can be read by others and re-reads it
// on each SIGHUP (see reloadOnHangup), until the returned function is
// called.
func watchKeys(log *slog.Logger, users *bokbok.KeysFile, noUsers string) (stop func()) {
	warnIfExposed(log, users)
	return reloadOnHangup(log, users, noUsers)
}

// warnIfExposed logs a warning if the keys file can be read by others.
func warnIfExposed(log *slog.Logger, users *bokbok.KeysFile) {
	if users.ReadableByOthers() {
		log.Warn("the keys file is readable by other users; make it private", "file", users.Path(), "fix", "chmod 600 "+users.Path())
	}
}

// reloadOnHangup re-reads the keys file on each SIGHUP, until the
// returned function is called (which waits for a reload in progress). A
// file that does not read keeps the previous keys in use; noUsers is as
// for keysFileError.
func reloadOnHangup(log *slog.Logger, users *bokbok.KeysFile, noUsers string) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range hup {
			if err := users.Reload(); err != nil {
				for _, line := range strings.Split(keysFileError(err, noUsers), "\n") {
					log.Error("keys file not reloaded; keeping the previous keys", "problem", line)
				}
				continue
			}
			log.Info("keys file reloaded", "file", users.Path(), "users", users.Users(), "rotating", users.Rotating())
			warnIfExposed(log, users)
		}
	}()
	return func() {
		signal.Stop(hup)
		close(hup)
		<-done
	}
}
