package bokbok

import (
	"context"
	"errors"
	"net"
	"time"
)

// Run serves ln until ctx is done, then shuts the server down gracefully:
// it stops accepting, lets the requests in flight finish for up to grace,
// closes the connections still open after that, and returns once every
// connection (and its OnClose) has finished. It closes ln.
//
// Run returns nil after a clean stop. Otherwise it returns what Shutdown
// would: an error matching context.DeadlineExceeded if grace ran out, and
// matching ErrUnfinished, with a *ShutdownError counting them, if
// requests were cut short. If serving
// fails before ctx is done, Run closes the server and returns that error;
// if Shutdown or Close is called meanwhile, Run waits for the server to
// stop and returns nil.
// A program that should stop on Ctrl-C passes a context from
// signal.NotifyContext.
func (s *Server) Run(ctx context.Context, ln net.Listener, grace time.Duration) error {
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-served:
		if errors.Is(err, ErrServerClosed) {
			s.Wait() // a Shutdown or Close by someone else: let it finish
			return nil
		}
		s.Close()
		s.Wait()
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := s.Shutdown(sctx)
	if serr := <-served; !errors.Is(serr, ErrServerClosed) && err == nil {
		err = serr
	}
	s.Wait()
	return err
}
