package bokbok

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
)

// Mux is a Handler that routes each request and notification to the
// handler registered for its method name (see Conn.RequestMethod,
// Conn.NotifyMethod and Request.Method), as net/http.ServeMux routes by
// path. Method names match exactly. The method "" is a route like any
// other: it serves the messages the peer sends without a method name
// (Conn.Request, Conn.Call, Conn.Notify).
//
// A message for a method the Mux has no handler for is answered with a
// *RemoteError of code CodeNoMethod, which the caller matches with
// ErrNoMethod; for a notification the connection only logs it.
//
// The zero value is an empty Mux ready to use. Handlers may be added at
// any time, also while the Mux serves; routing a message takes no lock
// and allocates nothing. A Mux must not be copied after first use.
type Mux struct {
	// mu serializes registrations: it is held while a registration
	// copies routes, adds to the copy and publishes it. Readers never
	// take it.
	mu sync.Mutex
	// routes is the current method table. A published map is never
	// modified again (copy-on-write), so readers use it without a lock.
	routes atomic.Pointer[map[string]Handler]
}

// NewMux returns a new, empty Mux.
func NewMux() *Mux { return new(Mux) }

// Handle registers h as the handler for method ("" is the route for
// messages sent without a method name). It panics if h is nil or method
// already has a handler.
func (m *Mux) Handle(method string, h Handler) {
	if h == nil {
		panic(fmt.Sprintf("bokbok: Mux.Handle: nil handler for method %q", method))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var next map[string]Handler
	if cur := m.routes.Load(); cur != nil {
		if _, dup := (*cur)[method]; dup {
			panic(fmt.Sprintf("bokbok: Mux.Handle: method %q registered twice", method))
		}
		next = make(map[string]Handler, len(*cur)+1)
		maps.Copy(next, *cur)
	} else {
		next = make(map[string]Handler, 1)
	}
	next[method] = h
	m.routes.Store(&next)
}

// HandleFunc registers f as the handler for method; see Handle. It panics
// if f is nil or method already has a handler.
func (m *Mux) HandleFunc(method string, f func(ctx context.Context, req *Request) (any, error)) {
	if f == nil {
		panic(fmt.Sprintf("bokbok: Mux.HandleFunc: nil handler for method %q", method))
	}
	m.Handle(method, HandlerFunc(f))
}

// ServeBokbok serves req with the handler registered for req.Method(). A
// method without a handler gets a *RemoteError of code CodeNoMethod.
func (m *Mux) ServeBokbok(ctx context.Context, req *Request) (any, error) {
	if routes := m.routes.Load(); routes != nil {
		if h, ok := (*routes)[req.method]; ok {
			return h.ServeBokbok(ctx, req)
		}
	}
	return nil, &RemoteError{Code: CodeNoMethod, Message: fmt.Sprintf("no method %q", req.method)}
}

// Methods returns the method names that have a handler, sorted (nil for
// an empty Mux).
func (m *Mux) Methods() []string {
	routes := m.routes.Load()
	if routes == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(*routes))
}
