//go:build !linux

package bokbok

import "net"

// tuneConn does nothing on this platform (see tcpopt_linux.go).
func tuneConn(net.Conn) {}
