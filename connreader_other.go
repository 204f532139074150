//go:build !unix

package bokbok

// canTryRead reports whether readNonBlocking works here: not on this
// platform, where connections keep their opening's read buffer.
const canTryRead = false

// readNonBlocking is never called on this platform.
func readNonBlocking(fd uintptr, p []byte) (n int, wait bool, err error) {
	panic("bokbok: readNonBlocking is not available on this platform")
}
