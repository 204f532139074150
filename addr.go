package bokbok

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
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

// Listen parses addr with ParseAddr and listens on it.
func Listen(addr string) (net.Listener, error) {
	a, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	return net.Listen(a.Network, a.Address)
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
