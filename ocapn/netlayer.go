package ocapn

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
)

// Netlayer carries OCapN sessions over one transport: it accepts
// connections at this node's location on it and dials other peers on the
// same transport (OCapN's Netlayers draft).
type Netlayer interface {
	// Transport is the transport's name, as locators carry it.
	Transport() string
	// Location is this node's locator on the transport.
	Location() Peer
	// Accept waits for the next inbound connection. A netlayer that
	// authenticates the peer returns a connection with a method
	// PeerDesignator() string, the designator it authenticated; the
	// session is then refused if the peer's op:start-session names
	// another designator or transport.
	Accept() (net.Conn, error)
	// Dial connects to p, a peer on this transport.
	Dial(ctx context.Context, p Peer) (net.Conn, error)
	// Close stops accepting; Accept then fails.
	Close() error
}

// TestingOnlyTCP is the tcp-testing-only netlayer, as the OCapN test
// suite defines it: Syrup messages over a plain TCP connection. IT IS NOT
// SECURE: nothing is encrypted or authenticated, and a peer's designator
// is whatever it claims. It exists so that OCapN implementations can test
// against each other; use it for nothing else.
type TestingOnlyTCP struct {
	ln  net.Listener
	loc Peer
}

// TestingOnlyTransport is the transport name of TestingOnlyTCP.
const TestingOnlyTransport = "tcp-testing-only"

// ListenTestingOnlyTCP listens on addr (host:port; port 0 picks one) and
// returns the netlayer. Its location has a random designator and the
// listener's host and port as hints.
func ListenTestingOnlyTCP(addr string) (*TestingOnlyTCP, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(ln.Addr().String())
	if err != nil {
		ln.Close()
		return nil, err
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		ln.Close()
		return nil, err
	}
	return &TestingOnlyTCP{ln: ln, loc: Peer{
		Transport:  TestingOnlyTransport,
		Designator: hex.EncodeToString(id),
		Hints:      map[string]string{"host": host, "port": port},
	}}, nil
}

// Transport returns "tcp-testing-only".
func (t *TestingOnlyTCP) Transport() string { return TestingOnlyTransport }

// Location returns the node's locator on this netlayer.
func (t *TestingOnlyTCP) Location() Peer { return t.loc }

// Accept waits for the next connection.
func (t *TestingOnlyTCP) Accept() (net.Conn, error) { return t.ln.Accept() }

// Dial connects to the host and port p's hints name.
func (t *TestingOnlyTCP) Dial(ctx context.Context, p Peer) (net.Conn, error) {
	host, port := p.Hints["host"], p.Hints["port"]
	if host == "" || port == "" {
		return nil, fmt.Errorf("ocapn: %s: a %s locator needs host and port hints", p, TestingOnlyTransport)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", net.JoinHostPort(host, port))
}

// Close stops listening.
func (t *TestingOnlyTCP) Close() error { return t.ln.Close() }
