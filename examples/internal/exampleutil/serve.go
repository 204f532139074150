package exampleutil

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/ocap"
)

// ShutdownTimeout is how long Serve lets requests in flight run once it
// starts shutting down, before it closes the remaining connections.
const ShutdownTimeout = 10 * time.Second

// SignalContext returns a context that is done once the process gets
// SIGINT (Ctrl-C) or SIGTERM. From then on the signals are no longer
// caught, so a second one kills the process at once, even while it is
// shutting down. stop stops catching them earlier; defer it.
//
// Call it before setting up, so that a signal that comes meanwhile stops
// the program gracefully too, once it serves.
func SignalContext() (ctx context.Context, stop context.CancelFunc) {
	ctx, stop = signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	return ctx, stop
}

// Serve serves srv on ln until ctx is done (see SignalContext) and then
// shuts srv down gracefully: it logs shuttingDown, lets requests in flight
// finish for up to ShutdownTimeout, and closes the connections still open
// after that. It returns nil once srv has stopped, or an error starting
// with "serve: " if serving failed.
func Serve(ctx context.Context, srv *bokbok.Server, ln net.Listener, shuttingDown string) error {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	}
	log.Print(shuttingDown)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Printf("shutdown: %v (closed the remaining connections)", err)
	}
	if err := <-served; !errors.Is(err, bokbok.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// ServeNode serves srv on ln as Serve does, for a program whose
// capability node (ocap.Node, srv's Handler) serves actors of vat. Once
// srv has stopped, it closes node's sessions and vat, waits until vat's
// goroutine has ended, and logs "stopped".
func ServeNode(ctx context.Context, srv *bokbok.Server, ln net.Listener, node *ocap.Node, vat *ocap.Vat) error {
	if err := Serve(ctx, srv, ln, "shutting down"); err != nil {
		return err
	}
	node.Close()
	vat.Close()
	<-vat.Done()
	log.Printf("stopped")
	return nil
}

// ListenForSturdyrefs listens on addr (bokbok.Listen) for a program that
// hands out sturdyrefs, and returns the listener with the address others
// dial to reach it, for the program's ocap.Node.Addr, which its sturdyrefs
// carry. That address is public, the -public flag, if given; otherwise,
// for TCP, the address the listener got (with the port it got, if addr
// asked for a free one), and for a Unix socket its absolute path, since a
// sturdyref must be usable from any directory.
func ListenForSturdyrefs(addr, public string) (ln net.Listener, dialAddr string, err error) {
	ln, err = bokbok.Listen(addr)
	if err != nil {
		return nil, "", err
	}
	dialAddr, err = publicAddr(ln, public)
	if err != nil {
		ln.Close()
		return nil, "", err
	}
	return ln, dialAddr, nil
}

// publicAddr returns the address others dial to reach ln: see
// ListenForSturdyrefs.
func publicAddr(ln net.Listener, public string) (string, error) {
	if public != "" {
		if _, err := bokbok.ParseAddr(public); err != nil {
			return "", fmt.Errorf("-public: %w", err)
		}
		return public, nil
	}
	if ln.Addr().Network() != "unix" {
		if tcp, ok := ln.Addr().(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
			log.Printf("listening on all interfaces: the sturdyref names %s; give -public HOST:PORT to name another address", tcp)
		}
		return ln.Addr().String(), nil
	}
	abs, err := filepath.Abs(ln.Addr().String())
	if err != nil {
		return "", err
	}
	return (bokbok.Addr{Network: "unix", Address: abs}).String(), nil
}
