package ocap

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/bokbok-go/bokbok"
)

// sturdyEntry is a registration: the object a swiss number names.
type sturdyEntry struct {
	swiss []byte
	ref   Ref
	label string // the Store label, or "" if not stored
}

// hostDial is a connection to a sturdyref host, being dialled or open.
type hostDial struct {
	done chan struct{} // closed when s and err are set
	s    *Session
	err  error
	quit bool // the dial failed because its caller's context ended
}

// Register makes a sturdyref for r: anyone who holds it can enliven r, from
// any process that can reach Node.Addr. The swiss number is fresh and
// random; the registration lasts until Unregister or the end of the
// program. Serve the node with a bokbok.Server whose UserKey comes from
// Node.UserKey, so that enlivening connections are accepted.
//
// Node.Addr must be set first, to an address peers can dial (Node.Listen
// sets it from the listener); with an empty or unusable Addr, or the zero
// Ref, Register fails and returns the zero Sturdyref, whose String is "".
func (n *Node) Register(r Ref) (Sturdyref, error) {
	a, err := n.checkRegister(r)
	if err != nil {
		return Sturdyref{}, err
	}
	swiss, err := newSwiss()
	if err != nil {
		return Sturdyref{}, err
	}
	return n.register(a, r, swiss, ""), nil
}

// RegisterAs is Register with a swiss number kept in Node.Store under
// label: a program that registers its objects under the same labels after
// a restart serves the same sturdyrefs. It checks Node.Addr and r before
// it touches the store, so a failed RegisterAs adds no label.
func (n *Node) RegisterAs(label string, r Ref) (Sturdyref, error) {
	if n.Store == nil {
		return Sturdyref{}, errors.New("ocap: RegisterAs needs Node.Store (see OpenStore)")
	}
	a, err := n.checkRegister(r)
	if err != nil {
		return Sturdyref{}, err
	}
	swiss, err := n.Store.swissFor(label)
	if err != nil {
		return Sturdyref{}, err
	}
	return n.register(a, r, swiss, label), nil
}

// checkRegister checks that r and n.Addr can make a sturdyref, and
// returns the parsed address.
func (n *Node) checkRegister(r Ref) (bokbok.Addr, error) {
	if r.IsZero() {
		return bokbok.Addr{}, errors.New("ocap: Register of the zero Ref")
	}
	if n.Addr == "" {
		return bokbok.Addr{}, errors.New("ocap: Node.Addr is empty: listen with Node.Listen, which sets it, or set it to the address peers dial to reach this node")
	}
	a, err := bokbok.ParseAddr(n.Addr)
	if err != nil {
		return bokbok.Addr{}, fmt.Errorf("ocap: Node.Addr: %w", err)
	}
	if a.Network == "unix" && !strings.HasPrefix(a.Address, "/") {
		// Its URI would not parse, and peers elsewhere could not use it.
		return bokbok.Addr{}, fmt.Errorf("ocap: Node.Addr %q: a sturdyref needs an absolute socket path", n.Addr)
	}
	if a.Network == "tcp" {
		host, port, _ := net.SplitHostPort(a.Address)
		if host == "" || port == "0" {
			return bokbok.Addr{}, fmt.Errorf("ocap: Node.Addr %q: a sturdyref needs a host and a port peers can dial (use the listener's address)", n.Addr)
		}
	}
	return a, nil
}

// register records the registration of r under swiss.
func (n *Node) register(a bokbok.Addr, r Ref, swiss []byte, label string) Sturdyref {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sturdy == nil {
		n.sturdy = map[string]*sturdyEntry{}
	}
	n.sturdy[sturdyID(swiss)] = &sturdyEntry{swiss: swiss, ref: r, label: label}
	return Sturdyref{Addr: a, Realm: n.Realm, Swiss: swiss}
}

// Unregister revokes a sturdyref: enlivening it fails from now on (and,
// for RegisterAs, its label leaves the store). References already
// enlivened stay live. It returns ErrUnknownSturdyref if s is not
// registered here.
func (n *Node) Unregister(s Sturdyref) error {
	n.mu.Lock()
	e := n.lookupSwissLocked(s.Swiss)
	if e != nil {
		delete(n.sturdy, sturdyID(s.Swiss))
	}
	n.mu.Unlock()
	if e == nil {
		return ErrUnknownSturdyref
	}
	if e.label != "" && n.Store != nil {
		return n.Store.forget(e.label)
	}
	return nil
}

// lookupSwissLocked finds a registration, comparing the swiss number in
// constant time. n.mu is held.
func (n *Node) lookupSwissLocked(swiss []byte) *sturdyEntry {
	if len(swiss) < minSwissSize {
		return nil
	}
	e := n.sturdy[sturdyID(swiss)]
	if e == nil || subtle.ConstantTimeCompare(e.swiss, swiss) != 1 {
		return nil
	}
	return e
}

// UserKey returns a function for bokbok.Server.UserKey. It knows the users
// of connections opened to enliven this node's sturdyrefs (user
// "sturdy:ID", key derived from the swiss number) and asks next about every
// other user; nil next refuses them. A connection of a sturdyref user
// reaches only what swiss numbers name: the bootstrap object's fetch and
// Node.Fallback are closed to it.
func (n *Node) UserKey(next func(user string) (bokbok.Key, bool)) func(user string) (bokbok.Key, bool) {
	return func(user string) (bokbok.Key, bool) {
		if id, ok := strings.CutPrefix(user, sturdyUserPrefix); ok {
			n.mu.Lock()
			e := n.sturdy[id]
			n.mu.Unlock()
			if e == nil {
				return bokbok.Key{}, false
			}
			return sturdyKey(e.swiss), true
		}
		if next == nil {
			return bokbok.Key{}, false
		}
		return next(user)
	}
}

// isSturdyConn reports whether c was opened to enliven a sturdyref.
func isSturdyConn(c *bokbok.Conn) bool { return strings.HasPrefix(c.User(), sturdyUserPrefix) }

// Enliven returns a live reference to the object s names. It reuses an
// open connection to s's host, or dials one: a secure connection whose user
// and key are derived from the swiss number (Node.Config gives the other
// settings). After a connection has dropped, enlivening again dials anew.
// Enlivening a sturdyref the host does not know fails with an error
// matching ErrUnknownSturdyref.
func (n *Node) Enliven(ctx context.Context, s Sturdyref) (Ref, error) {
	where := s.Addr.String()
	sess, err := n.hostSession(ctx, s)
	if err != nil {
		return Ref{}, fmt.Errorf("ocap: enlivening a sturdyref of %s: %w", where, err)
	}
	res, err := sess.Bootstrap().Send("enliven", s.Swiss).Await(ctx)
	if err != nil {
		var re *bokbok.RemoteError
		if errors.As(err, &re) && re.Code == CodeNotFound {
			err = ErrUnknownSturdyref
		}
		return Ref{}, fmt.Errorf("ocap: enlivening a sturdyref of %s: %w", where, err)
	}
	return res.Ref()
}

// hostSession returns an open session with s's host, dialling if needed.
// Concurrent calls for one host share one dial.
func (n *Node) hostSession(ctx context.Context, s Sturdyref) (*Session, error) {
	key := s.Addr.String() + "\x00" + s.Realm
	for {
		n.mu.Lock()
		d := n.hosts[key]
		if d == nil {
			d = &hostDial{done: make(chan struct{})}
			if n.hosts == nil {
				n.hosts = map[string]*hostDial{}
			}
			n.hosts[key] = d
			n.mu.Unlock()
			d.s, d.err = n.dialHost(ctx, s)
			d.quit = d.err != nil && ctx.Err() != nil
			if d.err != nil {
				n.dropHost(key, d) // before done, so that no waiter finds it again
			}
			close(d.done)
			return d.s, d.err
		}
		n.mu.Unlock()
		select {
		case <-d.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if d.err != nil {
			if d.quit {
				continue // its caller gave up, not the host: dial with our context
			}
			return nil, d.err
		}
		select {
		case <-d.s.Done(): // dropped: dial again
			n.dropHost(key, d)
		default:
			return d.s, nil
		}
	}
}

func (n *Node) dropHost(key string, d *hostDial) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.hosts[key] == d {
		delete(n.hosts, key)
	}
}

func (n *Node) dialHost(ctx context.Context, s Sturdyref) (*Session, error) {
	var cfg bokbok.Config
	if n.Config != nil {
		cfg = *n.Config
	}
	k := sturdyKey(s.Swiss)
	cfg.Key, cfg.User, cfg.Realm = &k, sturdyUserPrefix+sturdyID(s.Swiss), s.Realm
	sess, err := n.Dial(ctx, s.Addr.String(), &cfg)
	if errors.Is(err, bokbok.ErrAuth) {
		err = fmt.Errorf("%w (%w)", ErrUnknownSturdyref, err)
	}
	return sess, err
}
