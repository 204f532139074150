//go:build unix

package bokbok

import (
	"os"
	"syscall"
)

// Reads and writes tried without blocking on a socket the runtime's poller
// owns (its descriptor is in non-blocking mode).
//
// They call the standard library's syscall.Read and syscall.Write, as the
// net package does: under the race detector those carry the
// happens-before edge from a write to the read of the same bytes, so a
// value handed to a peer in this process through the socket is not
// reported as a race (another package's wrappers have their own edge,
// which the net package's reads and writes never meet).

// canTryIO reports whether readNonBlocking and writeNonBlocking work here.
const canTryIO = true

// readNonBlocking reads from the non-blocking socket fd into p. wait is
// true if the socket has nothing to read yet.
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

// writeNonBlocking writes what the non-blocking socket fd takes of p now:
// n is 0 if its send buffer is full.
func writeNonBlocking(fd uintptr, p []byte) (n int, err error) {
	for {
		n, err := syscall.Write(int(fd), p)
		switch err {
		case nil:
			return n, nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, nil
		default:
			return 0, os.NewSyscallError("write", err)
		}
	}
}
