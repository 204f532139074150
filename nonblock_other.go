//go:build !unix

package bokbok

// canTryIO reports whether readNonBlocking and writeNonBlocking work here:
// not on this platform, where connections keep their opening's read buffer
// and every write goes through the writer goroutine.
const canTryIO = false

// readNonBlocking is never called on this platform.
func readNonBlocking(fd uintptr, p []byte) (n int, wait bool, err error) {
	panic("bokbok: readNonBlocking is not available on this platform")
}

// writeNonBlocking is never called on this platform.
func writeNonBlocking(fd uintptr, p []byte) (n int, err error) {
	panic("bokbok: writeNonBlocking is not available on this platform")
}
