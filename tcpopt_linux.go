package bokbok

import (
	"net"

	"golang.org/x/sys/unix"
)

// notSentLowWater is TCP_NOTSENT_LOWAT for bokbok's TCP connections: the
// kernel accepts more bytes only while fewer than this many are waiting
// unsent. Without it the kernel buffers megabytes of a large message ahead
// of a small call written after it, and interleaving frames (send.go)
// could not help the small call; with it the queue stays in bokbok, where
// the small call's frame overtakes the rest of the large message.
const notSentLowWater = 64 << 10

// tuneConn sets notSentLowWater on TCP connections (best effort).
func tuneConn(nc net.Conn) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, notSentLowWater)
	})
}
