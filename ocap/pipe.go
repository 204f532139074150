package ocap

import (
	"context"
	"net"

	"github.com/bokbok-go/bokbok"
)

// Pipe connects two nodes in this process over the real protocol on a
// net.Pipe (Goblins' "fake intarwebs"): capability programs can be tested
// without sockets. It returns a's session (whose peer is b) and b's.
// Closing either session closes the pipe.
func Pipe(ctx context.Context, a, b *Node) (*Session, *Session, error) {
	ca, cb := net.Pipe()
	type result struct {
		s   *Session
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := b.NewSession(ctx, cb, &bokbok.Config{})
		ch <- result{s, err}
	}()
	sa, err := a.NewSession(ctx, ca, &bokbok.Config{})
	rb := <-ch
	if err != nil || rb.err != nil {
		if sa != nil {
			sa.Close()
		}
		if rb.s != nil {
			rb.s.Close()
		}
		ca.Close()
		cb.Close()
		if err == nil {
			err = rb.err
		}
		return nil, nil, err
	}
	return sa, rb.s, nil
}
