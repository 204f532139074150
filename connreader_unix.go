//go:build unix

package bokbok

import (
	"os"
	"syscall"
)

// canTryRead reports whether readNonBlocking works here.
const canTryRead = true

// readNonBlocking reads from the non-blocking socket fd into p. wait is
// true if the socket has nothing to read yet.
//
// It calls the standard library's syscall.Read, as the net package does:
// under the race detector, syscall.Read and syscall.Write carry the
// happens-before edge from a write to the read of the same bytes, so a
// value handed to a peer in this process through the socket is not
// reported as a race (another package's read wrapper has its own edge,
// which the net package's writes never release).
func readNonBlocking(fd uintptr, p []byte) (n int, wait bool, err error) {
	for {
		n, err := syscall.Read(int(fd), p)
		switch err {
		case nil:
			return n, false, nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, true, nil
		default:
			return 0, false, os.NewSyscallError("read", err)
		}
	}
}
