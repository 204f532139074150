//go:build unix

package bokbok

import (
	"net"
	"runtime"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// receiveBuffer returns the kernel's receive buffer size of c's socket.
func receiveBuffer(t *testing.T, c *Conn) int {
	t.Helper()
	raw, err := c.nc.(*net.TCPConn).SyscallConn()
	require.NoError(t, err)
	var n int
	var serr error
	require.NoError(t, raw.Control(func(fd uintptr) {
		n, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	}))
	require.NoError(t, serr)
	return n
}

// TestSocketReceiveBuffer: Config.SocketReceiveBuffer sets the receive
// buffer of dialled and accepted TCP connections (Linux reports twice what
// was set, its bookkeeping included); the connection works as before.
func TestSocketReceiveBuffer(t *testing.T) {
	const size = 64 << 10
	c, s := tcpPair(t, &Config{SocketReceiveBuffer: size},
		&Server{Config: Config{Handler: echoHandler, SocketReceiveBuffer: size}})
	for side, conn := range map[string]*Conn{"dialled": c, "accepted": s} {
		n := receiveBuffer(t, conn)
		assert.GreaterOrEqual(t, n, size, side)
		if runtime.GOOS == "linux" {
			assert.LessOrEqual(t, n, 2*size, side)
		}
	}
	var out []byte
	require.NoError(t, c.Call(testCtx(t), make([]byte, 1<<20), &out))
	assert.Len(t, out, 1<<20)
}

// TestSocketReceiveBufferNegative: a negative size is refused with an error
// naming the field.
func TestSocketReceiveBufferNegative(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	_, err = Dial(testCtx(t), ln.Addr().String(), &Config{SocketReceiveBuffer: -1})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "SocketReceiveBuffer")
}
