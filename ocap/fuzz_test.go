package ocap

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// FuzzCapNetwork decodes its input into a sequence of actions across three
// nodes connected in pairs by Pipe: spawning actors, fetching them from
// other nodes, sending to them through references and promises, passing
// references inside messages (so that messages travel through proxies on
// a third node), asking actors to send through the references they were
// given, dropping and releasing references, and cutting connections.
//
// Every message names the actor it is meant for and carries the number of
// its reference (a "handle") and its sequence number on that reference.
// The receiving actor checks both: the message reached the right actor,
// and it is the next one sent through its reference (E-order, with
// nothing lost in between: a reference that loses a message, because it
// was released or a connection on its path was cut, never delivers
// another). A promise that is fulfilled answers the id of the actor it
// reached. Without releases and cuts every message must arrive. At the
// end, once everything has been dropped and the garbage collector has
// run, every table of every session is empty, and no goroutine is left.
//
// The seed corpus runs as a normal test; each run is bounded in actions
// and in time.
func FuzzCapNetwork(f *testing.F) {
	// A network without losses: every message must arrive. (Handles are
	// numbered here by their position in the driver's list, from 0.)
	f.Add(fuzzSeed(
		[]int{fzSpawn, 0, 0}, []int{fzSpawn, 1, 1}, []int{fzSpawn, 2, 0},
		[]int{fzFetch, 0, 1}, []int{fzFetch, 1, 2}, []int{fzFetch, 2, 0}, // 3, 4, 5: promises
		[]int{fzBurst, 3, 7, 0x55}, []int{fzBurst, 4, 7, 0xaa}, []int{fzSend, 5, 0},
		[]int{fzPass, 3, 0}, // actor 1 keeps actor 0; 6: node 0's promise for actor 0, via node 1
		[]int{fzBurst, 6, 5, 0x0f}, []int{fzPoke, 3, 0}, []int{fzPoke, 3, 0},
		[]int{fzSpawnVia, 4}, []int{fzBurst, 7, 6, 0x33}, // actor 3, made on node 2 through a promise
		[]int{fzResolve, 3}, []int{fzResolve, 6}, []int{fzBurst, 8, 4, 0}, []int{fzBurst, 9, 4, 0xff},
		[]int{fzPass, 4, 4}, []int{fzPoke, 4, 0}, []int{fzFetch, 0, 3}, []int{fzBurst, 11, 8, 0x5a},
		[]int{fzGC}, []int{fzDrop, 3, 0}, []int{fzGC}, []int{fzBurst, 2, 8, 0x99},
	))
	// A three-hop path, then the connection in its middle is cut.
	f.Add(fuzzSeed(
		[]int{fzSpawn, 0, 0}, []int{fzSpawn, 1, 0}, []int{fzSpawn, 2, 1},
		[]int{fzFetch, 1, 2}, // 3: node 1's promise for actor 2 on node 2
		[]int{fzFetch, 0, 1}, // 4: node 0's promise for actor 1 on node 1
		[]int{fzPass, 1, 3},  // actor 1 keeps actor 2; 5: node 1's promise for it
		[]int{fzResolve, 4},  // 6: node 0's import of actor 1
		[]int{fzPass, 6, 6},  // actor 1 keeps actor 0
		// Node 0 pokes actor 1, which sends to actor 2: 0 -> 1 -> 2.
		[]int{fzBurst, 5, 8, 0x0f}, []int{fzPoke, 4, 0}, []int{fzPoke, 6, 0}, []int{fzPoke, 4, 1},
		[]int{fzCut, 1, 0}, // 1-2
		[]int{fzBurst, 5, 8, 0xf0}, []int{fzPoke, 4, 0}, []int{fzPoke, 6, 1}, []int{fzBurst, 6, 3, 1},
		[]int{fzFetch, 2, 1}, []int{fzSend, 9, 0},
	))
	// Releases, drops and the garbage collector.
	f.Add(fuzzSeed(
		[]int{fzSpawn, 0, 0}, []int{fzSpawn, 1, 0}, []int{fzSpawn, 2, 1},
		[]int{fzFetch, 0, 1}, []int{fzFetch, 0, 2}, []int{fzResolve, 3}, []int{fzResolve, 4},
		[]int{fzPass, 5, 6}, []int{fzPass, 6, 5}, []int{fzPoke, 5, 0}, []int{fzPoke, 6, 0},
		[]int{fzDrop, 5, 1}, []int{fzGC}, []int{fzBurst, 5, 4, 0}, []int{fzForget, 1, 1},
		[]int{fzFetch, 0, 1}, []int{fzBurst, 8, 3, 0}, []int{fzDrop, 0, 0}, []int{fzGC}, []int{fzForget, 2, 0},
	))
	// A reference passed through a promise that is dropped at once: the
	// message may arrive after the driver has begun to clean up.
	f.Add(fuzzSeed(
		[]int{fzSpawn, 0, 0}, []int{fzSpawn, 1, 0}, []int{fzSpawn, 2, 1},
		[]int{fzFetch, 1, 2}, []int{fzPass, 3, 0}, []int{fzDrop, 4, 0}, []int{fzDrop, 3, 0}, []int{fzFetch, 2, 1},
	))
	for seed := uint64(1); seed <= 5; seed++ {
		r := rand.New(rand.NewPCG(seed, seed*7919))
		b := make([]byte, 160)
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		leaks := goleak.IgnoreCurrent()
		runCapNetwork(t, data)
		goleak.VerifyNone(t, leaks)
	})
}

// The actions, and the bytes that follow each (references to handles and
// actors are taken modulo how many there are).
const (
	fzSpawn    = iota // node, vat: an actor; the driver gets a local handle
	fzFetch           // node, actor: fetch the actor from its node; a promise handle
	fzSend            // handle, mode: one message (mode bit 0: SendOnly)
	fzBurst           // handle, count, mode: 1 to 8 messages (mode bit i: SendOnly)
	fzSpawnVia        // handle: the actor spawns a new one; a promise handle for it
	fzPass            // handle, handle: pass the second in a message through the first; the
	//                   actor keeps it (with a handle of its own) and answers it: a promise handle
	fzPoke    // handle, index: the actor sends through one of the references it kept
	fzResolve // handle: await a promise handle; a handle for what it resolved to
	fzDrop    // handle, release: forget a handle, after Ref.Release if release is odd
	fzForget  // actor, release: the actor forgets (or releases) what it kept
	fzCut     // pair, side: close a connection (0-1, 1-2, 0-2) from one side
	fzGC      // runtime.GC
	fzOps
)

// fuzzSeed encodes actions as an input.
func fuzzSeed(actions ...[]int) []byte {
	var b []byte
	for _, a := range actions {
		for _, x := range a {
			b = append(b, byte(x))
		}
	}
	return b
}

const (
	fuzzMaxActions = 64
	fuzzTimeLimit  = 15 * time.Second // for one run, however it goes
)

// fuzzChecker collects what the actors see, from every vat.
type fuzzChecker struct {
	mu      sync.Mutex
	last    map[int]int // handle -> last sequence number delivered
	bad     []string
	hits    int
	actors  []fuzzActorInfo // by id
	handles int             // handle ids given out
}

type fuzzActorInfo struct {
	node int
	ref  Ref // local to its node
}

func (c *fuzzChecker) violation(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bad = append(c.bad, fmt.Sprintf(format, args...))
}

func (c *fuzzChecker) hit(self, target, handle, seq int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hits++
	if target != self {
		c.bad = append(c.bad, fmt.Sprintf("message %d of handle %d for actor %d reached actor %d", seq, handle, target, self))
	}
	if want := c.last[handle] + 1; seq != want {
		c.bad = append(c.bad, fmt.Sprintf("actor %d got message %d of handle %d, want %d", self, seq, handle, want))
	}
	c.last[handle] = seq
}

func (c *fuzzChecker) newHandle() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handles++
	return c.handles
}

// newActor registers an actor id; its node (if not known yet: -1) and
// reference are set when it has been spawned.
func (c *fuzzChecker) newActor(node int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.actors = append(c.actors, fuzzActorInfo{node: node})
	return len(c.actors) - 1
}

func (c *fuzzChecker) spawned(id, node int, r Ref) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.actors[id] = fuzzActorInfo{node: node, ref: r}
}

func (c *fuzzChecker) actorList() []fuzzActorInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]fuzzActorInfo(nil), c.actors...)
}

// fuzzActor is the one kind of actor of the network.
type fuzzActor struct {
	id      int
	node    *Node
	nodeNum int
	chk     *fuzzChecker
	kept    []fuzzKept
}

// fuzzKept is a reference an actor was given, with its own handle.
type fuzzKept struct {
	ref            Ref
	target, handle int
	seq            int
}

func newFuzzActor(chk *fuzzChecker, node *Node, nodeNum, id int) *fuzzActor {
	return &fuzzActor{id: id, node: node, nodeNum: nodeNum, chk: chk}
}

// Hit checks the message and answers who received it.
func (a *fuzzActor) Hit(target, handle, seq int) int {
	a.chk.hit(a.id, target, handle, seq)
	return a.id
}

// Take keeps a reference, to send through later, and answers it.
func (a *fuzzActor) Take(r Ref, target, handle int) Ref {
	a.kept = append(a.kept, fuzzKept{ref: r, target: target, handle: handle})
	return r
}

// Poke sends through one of the kept references; it answers as that
// message is answered.
func (a *fuzzActor) Poke(i int) (*Promise, error) {
	if len(a.kept) == 0 {
		return nil, errors.New("nothing kept")
	}
	k := &a.kept[i%len(a.kept)]
	k.seq++
	return k.ref.Send("hit", k.target, k.handle, k.seq), nil
}

// Spawn makes an actor with the given id next to this one, binds it on
// this node, and answers it.
func (a *fuzzActor) Spawn(ctx context.Context, id int) (Ref, error) {
	r, err := Spawn(ctx, newFuzzActor(a.chk, a.node, a.nodeNum, id))
	if err != nil {
		return Ref{}, err
	}
	a.chk.spawned(id, a.nodeNum, r)
	a.node.Bind(fmt.Sprint("a", id), r)
	return r, nil
}

func (a *fuzzActor) Forget() { a.kept = nil }

func (a *fuzzActor) ReleaseKept() {
	for _, k := range a.kept {
		k.ref.Release()
	}
	a.kept = nil
}

// fuzzHandle is a reference the driver holds.
type fuzzHandle struct {
	ref     Ref
	node    int // the node the reference belongs to
	target  int // the actor it must reach
	id      int // its handle number
	seq     int
	promise *Promise // if the reference is a promise
	how     string
}

// fuzzPending is an answer the driver waits for at the end.
type fuzzPending struct {
	p      *Promise
	target int // the actor id it must answer; -1 if unknown
	what   string
}

type fuzzNet struct {
	t       *testing.T
	ctx     context.Context
	chk     *fuzzChecker
	nodes   [3]*Node
	vats    [3][2]*Vat
	sess    [3][3]*Session
	cut     [3][3]bool
	handles []*fuzzHandle
	pending []fuzzPending
	lossy   bool     // something was released or cut: messages may be lost
	log     []string // the actions, for failure messages
}

// fuzzReader reads the input; past its end it reads zeros.
type fuzzReader struct {
	data []byte
	i    int
}

func (r *fuzzReader) byte() int {
	if r.i >= len(r.data) {
		return 0
	}
	r.i++
	return int(r.data[r.i-1])
}

func (r *fuzzReader) done() bool { return r.i >= len(r.data) }

func runCapNetwork(t *testing.T, data []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), fuzzTimeLimit)
	defer cancel()
	n := &fuzzNet{t: t, ctx: ctx, chk: &fuzzChecker{last: map[int]int{}}}
	for i := range n.nodes {
		n.nodes[i] = &Node{}
		for j := range n.vats[i] {
			n.vats[i][j] = NewVat(fmt.Sprintf("n%d.%d", i, j))
		}
	}
	defer n.teardown()
	for i := 0; i < 3; i++ {
		for j := i + 1; j < 3; j++ {
			si, sj, err := Pipe(ctx, n.nodes[i], n.nodes[j])
			if err != nil {
				t.Fatalf("Pipe: %v", err)
			}
			n.sess[i][j], n.sess[j][i] = si, sj
		}
	}

	n.run(&fuzzReader{data: data})
	n.settle()
	n.drain()
	// Read the checker once every vat has stopped: deliveries that were
	// still on their way have been checked, or will never happen.
	n.teardown()
	n.chk.mu.Lock()
	bad, hits := n.chk.bad, n.chk.hits
	n.chk.mu.Unlock()
	t.Logf("%d actions, %d deliveries checked, %d handles, lossy %v", len(n.log), hits, n.chk.handles, n.lossy)
	if len(bad) > 0 {
		t.Fatalf("%d violations (of %d deliveries):\n  %s\nactions:\n  %s",
			len(bad), hits, strings.Join(bad, "\n  "), strings.Join(n.log, "\n  "))
	}
}

// teardown closes every session and vat and waits for them; it may run
// twice.
func (n *fuzzNet) teardown() {
	for i := 0; i < 3; i++ {
		for j := 0; j < 3; j++ {
			if s := n.sess[i][j]; s != nil {
				s.Close()
			}
		}
	}
	for i := range n.vats {
		for _, v := range n.vats[i] {
			v.Close()
			<-v.Done()
		}
	}
}

func (n *fuzzNet) logf(format string, args ...any) {
	n.log = append(n.log, fmt.Sprintf(format, args...))
}

// pick returns a handle chosen by b, or nil.
func (n *fuzzNet) pick(b int) *fuzzHandle {
	if len(n.handles) == 0 {
		return nil
	}
	return n.handles[b%len(n.handles)]
}

func (n *fuzzNet) addHandle(h *fuzzHandle) *fuzzHandle {
	h.id = n.chk.newHandle()
	n.handles = append(n.handles, h)
	n.logf("  -> handle %d: %s, on node %d, for actor %d", h.id, h.how, h.node, h.target)
	return h
}

// spawn makes an actor on a node and gives the driver a local handle.
func (n *fuzzNet) spawn(node, vat int) {
	id := n.chk.newActor(node)
	r := n.vats[node][vat].Spawn(newFuzzActor(n.chk, n.nodes[node], node, id))
	n.chk.spawned(id, node, r)
	n.nodes[node].Bind(fmt.Sprint("a", id), r)
	n.logf("spawn actor %d on node %d", id, node)
	n.addHandle(&fuzzHandle{ref: r, node: node, target: id, how: "local"})
}

// run performs the actions.
func (n *fuzzNet) run(r *fuzzReader) {
	for step := 0; step < fuzzMaxActions && !r.done() && n.ctx.Err() == nil; step++ {
		op := r.byte() % 16
		if op >= fzOps {
			op = fzBurst // most of the input is traffic
		}
		switch op {
		case fzSpawn:
			n.spawn(r.byte()%3, r.byte()%2)
		case fzFetch: // an actor, from the node where it lives
			from, b := r.byte()%3, r.byte()
			actors := n.chk.actorList()
			if len(actors) == 0 {
				continue
			}
			id := b % len(actors)
			a := actors[id]
			if a.ref.IsZero() {
				continue // its spawn has not happened (yet)
			}
			n.logf("fetch actor %d (node %d) from node %d", id, a.node, from)
			if a.node == from {
				n.addHandle(&fuzzHandle{ref: a.ref, node: from, target: id, how: "local, by fetch"})
				continue
			}
			p := n.sess[from][a.node].Fetch(fmt.Sprint("a", id))
			n.addHandle(&fuzzHandle{ref: p.Ref(), promise: p, node: from, target: id, how: "promise from fetch"})
		case fzSend, fzBurst:
			h := n.pick(r.byte())
			count := 1
			if op == fzBurst {
				count = 1 + r.byte()%8
			}
			mode := r.byte()
			if h == nil {
				continue
			}
			n.logf("send %d through handle %d", count, h.id)
			for i := 0; i < count; i++ {
				h.seq++
				if (mode>>i)&1 == 0 {
					n.pending = append(n.pending, fuzzPending{
						p: h.ref.Send("hit", h.target, h.id, h.seq), target: h.target,
						what: fmt.Sprintf("message %d of handle %d", h.seq, h.id),
					})
				} else if err := h.ref.SendOnly("hit", h.target, h.id, h.seq); err != nil {
					n.chk.violation("SendOnly through handle %d: %v", h.id, err)
				}
			}
		case fzSpawnVia: // and pipeline to the new actor
			h := n.pick(r.byte())
			if h == nil {
				continue
			}
			id := n.chk.newActor(-1)
			n.logf("pipelined spawn of actor %d through handle %d", id, h.id)
			p := h.ref.Send("spawn", id)
			n.addHandle(&fuzzHandle{ref: p.Ref(), promise: p, node: h.node, target: id, how: "promise from spawn"})
		case fzPass: // the actor keeps it and answers it
			h1, b := n.pick(r.byte()), r.byte()
			if h1 == nil {
				continue
			}
			var same []*fuzzHandle
			for _, h := range n.handles {
				if h.node == h1.node {
					same = append(same, h)
				}
			}
			h2 := same[b%len(same)]
			kept := n.chk.newHandle()
			n.logf("pass handle %d (actor %d) through handle %d (actor %d); kept as handle %d",
				h2.id, h2.target, h1.id, h1.target, kept)
			p := h1.ref.Send("take", h2.ref, h2.target, kept)
			n.addHandle(&fuzzHandle{ref: p.Ref(), promise: p, node: h1.node, target: h2.target, how: "promise from take"})
		case fzPoke:
			h, i := n.pick(r.byte()), r.byte()
			if h == nil {
				continue
			}
			n.logf("poke %d through handle %d", i, h.id)
			n.pending = append(n.pending, fuzzPending{p: h.ref.Send("poke", i), target: -1,
				what: fmt.Sprintf("poke through handle %d", h.id)})
		case fzResolve:
			h := n.pick(r.byte())
			if h == nil || h.promise == nil {
				continue
			}
			wctx, cancel := context.WithTimeout(n.ctx, 3*time.Second)
			res, err := h.promise.Await(wctx)
			cancel()
			if errors.Is(err, context.DeadlineExceeded) {
				n.chk.violation("the promise of handle %d never settled", h.id)
				continue
			}
			if err != nil {
				n.logf("resolve handle %d: %v", h.id, err)
				continue
			}
			ref, err := res.Ref()
			if err != nil {
				n.chk.violation("handle %d resolved to a value that is not a reference: %v", h.id, err)
				continue
			}
			n.logf("resolve handle %d", h.id)
			n.addHandle(&fuzzHandle{ref: ref, node: h.node, target: h.target, how: "resolved " + ref.String()})
		case fzDrop:
			b, release := r.byte(), r.byte()%2 == 1
			if len(n.handles) == 0 {
				continue
			}
			i := b % len(n.handles)
			h := n.handles[i]
			n.handles = append(n.handles[:i], n.handles[i+1:]...)
			n.logf("drop handle %d (release %v)", h.id, release)
			if release && !h.ref.IsLocal() && h.promise == nil {
				n.lossy = true
				h.ref.Release()
			}
		case fzForget:
			b, release := r.byte(), r.byte()%2 == 1
			actors := n.chk.actorList()
			if len(actors) == 0 || actors[b%len(actors)].ref.IsZero() {
				continue
			}
			method := "forget"
			if release {
				method = "release-kept"
				n.lossy = true
			}
			n.logf("%s on actor %d", method, b%len(actors))
			_ = actors[b%len(actors)].ref.SendOnly(method)
		case fzCut:
			pair, side := r.byte()%3, r.byte()%2
			i, j := [3][2]int{{0, 1}, {1, 2}, {0, 2}}[pair][side], [3][2]int{{0, 1}, {1, 2}, {0, 2}}[pair][1-side]
			if n.cut[i][j] {
				continue
			}
			n.logf("cut %d-%d (closed by %d)", i, j, i)
			n.lossy = true
			n.cut[i][j], n.cut[j][i] = true, true
			n.sess[i][j].Close()
			<-n.sess[j][i].Done()
		case fzGC:
			runtime.GC()
		}
	}
}

// settle waits for every answer the driver asked for. Without releases
// and cuts, every one must be fulfilled; a fulfilled message answers the
// id of the actor it was meant for.
func (n *fuzzNet) settle() {
	for _, pe := range n.pending {
		res, err := pe.p.Await(n.ctx)
		switch {
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
			n.chk.violation("%s never settled", pe.what)
		case err != nil:
			if !n.lossy && pe.target >= 0 {
				n.chk.violation("%s broke without a release or a cut: %v", pe.what, err)
			}
		case pe.target >= 0:
			var got int
			if err := res.Decode(&got); err != nil || got != pe.target {
				n.chk.violation("%s for actor %d was answered by actor %d (%v)", pe.what, pe.target, got, err)
			}
		}
	}
}

// drain drops everything and requires every table to empty. A message
// the driver did not wait for (a dropped promise's) may still bring an
// actor a reference to keep, so the actors are told to forget again and
// again.
func (n *fuzzNet) drain() {
	n.pending, n.handles = nil, nil
	deadline := time.Now().Add(10 * time.Second)
	for round := 0; ; round++ {
		if round%100 == 0 {
			for _, a := range n.chk.actorList() {
				if !a.ref.IsZero() {
					_ = a.ref.SendOnly("forget")
				}
			}
		}
		runtime.GC()
		busy := []string{}
		for i := 0; i < 3; i++ {
			for j := 0; j < 3; j++ {
				if s := n.sess[i][j]; s != nil && s.Stats() != (Stats{}) {
					busy = append(busy, fmt.Sprintf("node %d's session with %d: %+v", i, j, s.Stats()))
				}
			}
		}
		if len(busy) == 0 {
			return
		}
		if time.Now().After(deadline) || n.ctx.Err() != nil {
			sort.Strings(busy)
			n.t.Fatalf("tables not empty after dropping everything:\n  %s\nactions:\n  %s",
				strings.Join(busy, "\n  "), strings.Join(n.log, "\n  "))
		}
		time.Sleep(100 * time.Microsecond)
	}
}
