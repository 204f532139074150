package bokbok

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Addr is a parsed bokbok address: a network ("tcp" or "unix") and the
// address within it, ready for net.Dial or net.Listen.
type Addr struct {
	Network string // "tcp" or "unix"
	Address string // "host:port" for tcp, a file system path for unix
}

// String formats the address so that ParseAddr reads it back unchanged:
// "tcp://host:port", "unix:///abs/path", or a relative socket path that
// contains a "/" (a bare file name gains a "./" prefix).
func (a Addr) String() string {
	switch {
	case a.Network != "unix":
		return "tcp://" + a.Address
	case strings.HasPrefix(a.Address, "/"):
		return "unix://" + a.Address
	case strings.Contains(a.Address, "/"):
		return a.Address
	default:
		return "./" + a.Address
	}
}

// ParseAddr parses the address forms bokbok accepts:
//
//	host:port          TCP, e.g. "localhost:7000", "[::1]:7000", ":7000"
//	tcp://host:port    TCP, explicitly
//	path/to/socket     a Unix socket: any address containing "/" and no "://",
//	                   e.g. "./bokbok.sock", "/run/app.sock"
//	unix:///abs/path   a Unix socket at an absolute path
//
// Anything else is rejected with an error saying why: a bare word such as
// "sock" (a file or a host? write "./sock" or "sock:PORT"), a TCP address
// without a numeric port, a URL with an unknown scheme, a path or query
// after a TCP address, or "unix://" followed by a relative path.
func ParseAddr(s string) (Addr, error) {
	bad := func(why string) (Addr, error) {
		return Addr{}, fmt.Errorf("bokbok: bad address %q: %s", s, why)
	}
	if s == "" {
		return bad("empty")
	}
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		switch scheme {
		case "tcp":
			if strings.ContainsAny(rest, "/?#") {
				return bad("a tcp:// address is host:port, with no path")
			}
			if err := checkHostPort(rest); err != nil {
				return bad(err.Error())
			}
			return Addr{Network: "tcp", Address: rest}, nil
		case "unix":
			if !strings.HasPrefix(rest, "/") {
				return bad(`unix:// needs an absolute path, as in "unix:///run/app.sock"; write a relative path without the scheme, as in "./app.sock"`)
			}
			return Addr{Network: "unix", Address: rest}, nil
		default:
			return bad(`unknown scheme "` + scheme + `" (want tcp:// or unix://)`)
		}
	}
	if strings.Contains(s, "/") {
		return Addr{Network: "unix", Address: s}, nil
	}
	if !strings.Contains(s, ":") {
		return bad(`ambiguous: write "./` + s + `" for a Unix socket in this directory or "` + s + `:PORT" for TCP`)
	}
	if err := checkHostPort(s); err != nil {
		return bad(err.Error())
	}
	return Addr{Network: "tcp", Address: s}, nil
}

func checkHostPort(hp string) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return fmt.Errorf("want host:port (%v)", err)
	}
	if i := strings.IndexFunc(host, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".-_:%", r))
	}); i >= 0 {
		return fmt.Errorf("host %q has %q, which no host name or IP address has", host, host[i:i+1])
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

// Listen parses addr with ParseAddr and listens on it. A Unix socket's
// file is removed when the listener is closed. If the file is already
// there, Listen fails with an error that matches syscall.EADDRINUSE and
// says whether a server answers there or the file is stale, left behind
// by a program that ended without closing its listener, and can be
// removed.
func Listen(addr string) (net.Listener, error) {
	a, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen(a.Network, a.Address)
	if err != nil && a.Network == "unix" && errors.Is(err, syscall.EADDRINUSE) {
		return nil, socketInUse(a.Address, err)
	}
	return ln, err
}

// socketInUse explains an EADDRINUSE from listening on the Unix socket at
// path: a server answers there, or nothing does and the file is stale.
func socketInUse(path string, err error) error {
	c, dialErr := net.DialTimeout("unix", path, time.Second)
	if dialErr == nil {
		c.Close()
		return fmt.Errorf("bokbok: %w (a server is listening on %s: stop it or pick another path)", err, path)
	}
	if errors.Is(dialErr, syscall.ECONNREFUSED) {
		return fmt.Errorf("bokbok: %w (the socket file %s is stale: no server answers there; remove it and listen again)", err, path)
	}
	return fmt.Errorf("bokbok: %w (%s exists and is not a socket a server answers on: remove it or pick another path)", err, path)
}

// ListenerAddr returns the address a peer dials to reach ln, in the form
// ParseAddr reads: for TCP the address ln got, with the port it got if it
// asked for a free one (an unspecified IP such as 0.0.0.0 is kept as it
// is: name a reachable host yourself if peers are elsewhere); for a Unix
// socket its absolute path, so that the address works from any
// directory.
func ListenerAddr(ln net.Listener) (Addr, error) {
	la := ln.Addr()
	if la.Network() != "unix" {
		return Addr{Network: "tcp", Address: la.String()}, nil
	}
	abs, err := filepath.Abs(la.String())
	if err != nil {
		return Addr{}, fmt.Errorf("bokbok: the address of %s: %w", la, err)
	}
	return Addr{Network: "unix", Address: abs}, nil
}

// dialAddr parses addr and dials it, honouring ctx.
func dialAddr(ctx context.Context, addr string) (net.Conn, error) {
	a, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, a.Network, a.Address)
}
