package pipes

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/bokbok-go/bokbok"
)

// rotateHubs returns a dialer for a node with several hubs: each attempt
// tries them in turn, from the one that last answered, giving each an
// equal part of what remains of the attempt's time. dial, if set, opens
// one connection; nil dials the address as bokbok.ParseAddr reads it.
func rotateHubs(first string, more []string, dial func(context.Context, string) (net.Conn, error)) func(context.Context, string) (net.Conn, error) {
	addrs := append([]string{first}, more...)
	if dial == nil {
		dial = func(ctx context.Context, addr string) (net.Conn, error) {
			a, err := bokbok.ParseAddr(addr)
			if err != nil {
				return nil, err
			}
			var d net.Dialer
			return d.DialContext(ctx, a.Network, a.Address)
		}
	}
	var mu sync.Mutex // guards next
	next := 0         // the hub that last answered
	return func(ctx context.Context, _ string) (net.Conn, error) {
		mu.Lock()
		start := next
		mu.Unlock()
		var errs []error
		for i := range addrs {
			j := (start + i) % len(addrs)
			actx, cancel := ctx, context.CancelFunc(func() {})
			if dl, ok := ctx.Deadline(); ok {
				actx, cancel = context.WithTimeout(ctx, time.Until(dl)/time.Duration(len(addrs)-i))
			}
			c, err := dial(actx, addrs[j])
			cancel()
			if err == nil {
				mu.Lock()
				next = j
				mu.Unlock()
				return c, nil
			}
			errs = append(errs, fmt.Errorf("%s: %w", addrs[j], err))
			if ctx.Err() != nil {
				break
			}
		}
		return nil, errors.Join(errs...)
	}
}

// checkHubs checks the node's further hub addresses.
func checkHubs(addrs []string) error {
	for _, a := range addrs {
		if _, err := bokbok.ParseAddr(a); err != nil {
			return fmt.Errorf("pipes: NodeConfig.Hubs: %w", err)
		}
	}
	return nil
}
