package main

import (
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/bokbok-go/bokbok"
)

// keysFileError renders an error of the keys file, one problem per line.
func keysFileError(err error) string {
	var kerr *bokbok.KeysFileError
	if errors.As(err, &kerr) {
		if len(kerr.Problems) == 1 && kerr.Problems[0].Line == 0 { // no users
			return kerr.Error() + ", or serve with --insecure"
		}
		return kerr.Error()
	}
	return "--keys: " + trimBokbok(err)
}

// warnIfExposed logs a warning if the keys file can be read by others.
func warnIfExposed(log *slog.Logger, users *bokbok.KeysFile) {
	if users.ReadableByOthers() {
		log.Warn("the keys file is readable by other users; make it private", "file", users.Path(), "fix", "chmod 600 "+users.Path())
	}
}

// reloadOnHangup re-reads the keys file on each SIGHUP, until the
// returned function is called (which waits for a reload in progress). A
// file that does not read keeps the previous keys in use.
func reloadOnHangup(log *slog.Logger, users *bokbok.KeysFile) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range hup {
			if err := users.Reload(); err != nil {
				for _, line := range strings.Split(keysFileError(err), "\n") {
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
