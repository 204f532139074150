//go:build unix

package bokbok

import (
	"os"

	"golang.org/x/sys/unix"
)

// canTryRead reports whether readNonBlocking works here.
const canTryRead = true

// readNonBlocking reads from the non-blocking socket fd into p. wait is
// true if the socket has nothing to read yet.
func readNonBlocking(fd uintptr, p []byte) (n int, wait bool, err error) {
	for {
		n, err := unix.Read(int(fd), p)
		switch err {
		case nil:
			return n, false, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, true, nil
		default:
			return 0, false, os.NewSyscallError("read", err)
		}
	}
}
