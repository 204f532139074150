// Package bokbok is symmetric, multiplexed RPC between two peers over one
// connection (TCP or a Unix socket).
//
// Once a connection is open, "client" and "server" only say who dialled:
// either side may send requests to the other at any time, from any number
// of goroutines, and replies come back in any order. Each side serves the
// other's requests with its Handler.
//
//	conn, err := bokbok.Dial(ctx, "localhost:7000", &bokbok.Config{Handler: h})
//	var sum int
//	err = conn.Call(ctx, []int{1, 2, 3}, &sum)
//
// Messages are any value MessagePack can encode. Large messages are cut
// into 64 KiB frames that interleave with other traffic, so a small call is
// never stuck behind a large one. Cancelling a call's context cancels the
// handler's context on the peer; the deadline travels with the request.
// Handler errors and panics come back as *RemoteError. A closed connection
// fails every pending call with an error matching ErrClosed.
//
// The wire protocol is specified in PROTOCOL.md, exactly enough to write a
// compatible peer in another language.
//
// bokbok follows the Chicken Scheme egg of the same name: Dial is
// open-connection!, Conn.Request is request!, Server is start-server, and
// *RemoteError is remote-error.
package bokbok

import (
	"context"
	"net"
	"time"
)

// Dial connects to addr (see ParseAddr for the forms it accepts) and opens
// a bokbok connection on it as the dialling side. cfg may be nil for the
// defaults; cfg.Handler serves the requests the peer sends back. ctx bounds
// dialling and the opening handshake, not the connection's life.
func Dial(ctx context.Context, addr string, cfg *Config) (*Conn, error) {
	full, err := cfg.dialDefaults()
	if err != nil {
		return nil, err
	}
	nc, err := dialAddr(ctx, addr)
	if err != nil {
		return nil, err
	}
	c := newConn(nc, full, "")
	if err := c.open(ctx, opening{}, nil); err != nil {
		return nil, err
	}
	return c, nil
}

// NewConn opens a bokbok connection as the dialling side over nc, an
// already established connection (a TLS connection, one end of net.Pipe,
// a socket inherited from a parent process). On failure nc is closed. ctx
// bounds the opening handshake only.
func NewConn(ctx context.Context, nc net.Conn, cfg *Config) (*Conn, error) {
	full, err := cfg.dialDefaults()
	if err != nil {
		nc.Close()
		return nil, err
	}
	c := newConn(nc, full, "")
	if err := c.open(ctx, opening{}, nil); err != nil {
		return nil, err
	}
	return c, nil
}

// open performs the handshake and starts the connection. accept, if not
// nil, runs after the connection starts and before any handler may run
// (so it may make calls itself); an error from it closes the connection.
// On a failed handshake the network connection is closed.
func (c *Conn) open(ctx context.Context, op opening, accept func(*Conn) error) error {
	err := c.handshake(ctx, op)
	if op.afterHandshake != nil {
		op.afterHandshake()
	}
	if err != nil {
		c.nc.Close()
		return err
	}
	c.start()
	if accept != nil {
		if err := accept(c); err != nil {
			if c.rw != nil { // a deliberate close: tell the peer it is not a cut
				c.rw.close(time.Now().Add(closeRecordTimeout))
			}
			c.fail(err)
			<-c.done
			return err
		}
	}
	close(c.ready)
	return nil
}
