package ocap

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// numbered is a small actor to make many of: it answers its number.
type numbered struct{ id, n int }

func (c *numbered) Inc() int { c.n++; return c.id }

// bundle carries references at several depths of one message.
type bundle struct {
	List  []Ref
	ByKey map[string]Ref
	Inner struct{ R Ref }
}

// keeper keeps the references it is sent, until told to release them or
// to forget them (leaving them to the garbage collector).
type keeper struct {
	kept     map[Ref]int // reference -> how many times it arrived
	received int
	answered int
}

func newKeeper() *keeper { return &keeper{kept: map[Ref]int{}} }

func (k *keeper) Keep(b bundle) int {
	add := func(r Ref) {
		k.kept[r]++
		k.received++
	}
	for _, r := range b.List {
		add(r)
	}
	for _, r := range b.ByKey {
		add(r)
	}
	add(b.Inner.R)
	return len(k.kept)
}

// Distinct answers how many different references arrived (a reference
// sent again while held arrives as the same Ref) and how many in all.
func (k *keeper) Distinct() [2]int { return [2]int{len(k.kept), k.received} }

// CallSome calls n of the kept references; Answered counts the answers,
// which On callbacks receive in the keeper's vat.
func (k *keeper) CallSome(ctx context.Context, n int) error {
	i := 0
	for r := range k.kept {
		if i == n {
			break
		}
		i++
		if err := On(ctx, r.Send("inc"), func(Result) { k.answered++ }, nil); err != nil {
			return err
		}
	}
	return nil
}

func (k *keeper) Answered() int { return k.answered }

func (k *keeper) ReleaseAll() int {
	n := len(k.kept)
	for r := range k.kept {
		r.Release()
	}
	k.kept = map[Ref]int{}
	return n
}

func (k *keeper) Forget() int {
	n := len(k.kept)
	k.kept = map[Ref]int{}
	return n
}

// Make spawns n numbered actors in the keeper's vat and answers them.
func (k *keeper) Make(ctx context.Context, n int) ([]Ref, error) {
	out := make([]Ref, n)
	for i := range out {
		r, err := Spawn(ctx, &numbered{id: i})
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

// IsLocal answers which of the references refer to actors of this process.
func (k *keeper) IsLocal(rs []Ref) []bool {
	out := make([]bool, len(rs))
	for i, r := range rs {
		out[i] = r.IsLocal()
	}
	return out
}

// exportCounts sums how many times a session sent references that are not
// yet released, and how many times it received references it holds.
func exportCounts(s *Session) (sent, received uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.exports {
		sent += e.count
	}
	for _, e := range s.imports {
		received += e.count
	}
	return sent, received
}

// TestDistributedGCTenThousandRefs creates 10,000 actors, passes
// references to them in 2,500 messages (several per message, at several
// depths, the same reference twice in one message and again in the next
// message), then drops them: half by Ref.Release, half by leaving them to
// the garbage collector. References also travel the other way and back.
// In the end the export, import, question and answer tables of both sides
// are empty.
func TestDistributedGCTenThousandRefs(t *testing.T) {
	const n = 10000
	ctx := testCtx(t)
	va, vb := newTestVat(t, "a"), newTestVat(t, "b")
	var a, b Node
	b.Bind("release", vb.Spawn(newKeeper()))
	b.Bind("forget", vb.Spawn(newKeeper()))
	sa, sb := pipeNodes(t, ctx, &a, &b)

	func() {
		release := awaitRef(t, ctx, sa.Fetch("release"))
		forget := awaitRef(t, ctx, sa.Fetch("forget"))
		refs := make([]Ref, n)
		for i := range refs {
			refs[i] = va.Spawn(&numbered{id: i})
		}
		// Refs 0..n/2-1 go to the keeper that will release them, the rest
		// to the one that forgets them. Message k carries refs i..i+3 (with
		// i = 4k) six times between them, and ref i+4 (the next message's
		// first) once more.
		var last *Promise
		sent := 0
		for i := 0; i < n; i += 4 {
			to, lo, hi := release, 0, n/2
			if i >= n/2 {
				to, lo, hi = forget, n/2, n
			}
			next := refs[lo+(i+4-lo)%(hi-lo)]
			var bd bundle
			bd.List = []Ref{refs[i], refs[i+1], refs[i], next}
			bd.ByKey = map[string]Ref{"a": refs[i+2], "b": refs[i+1]}
			bd.Inner.R = refs[i+3]
			last = to.Send("keep", bd)
			sent += 7
		}
		await(t, ctx, last)
		require.Equal(t, [2]int{n / 2, sent / 2}, awaitValue[[2]int](t, ctx, release.Send("distinct")))
		require.Equal(t, [2]int{n / 2, sent / 2}, awaitValue[[2]int](t, ctx, forget.Send("distinct")))
		require.Equal(t, n, sa.Stats().Exports)
		require.Equal(t, n, sb.Stats().Imports)
		exported, _ := exportCounts(sa)
		_, imported := exportCounts(sb)
		require.Equal(t, uint64(sent), exported, "every reference sent is counted")
		require.Equal(t, exported, imported, "both sides count the same")

		// The imports work.
		await(t, ctx, forget.Send("call-some", 20))
		require.Eventually(t, func() bool {
			return awaitValue[int](t, ctx, forget.Send("answered")) == 20
		}, 5*time.Second, time.Millisecond)

		// References the other way: 1,000 made on B; A releases half and
		// drops half, after sending some back, which arrive as B's own.
		made := awaitValue[[]Ref](t, ctx, release.Send("make", 1000))
		require.Len(t, made, 1000)
		require.Equal(t, 1000+2, sa.Stats().Imports, "the made ones and the two keepers")
		local := awaitValue[[]bool](t, ctx, release.Send("is-local", made[:10]))
		require.Equal(t, []bool{true, true, true, true, true, true, true, true, true, true}, local,
			"a reference sent back to its exporter is the original")
		for _, r := range made[:500] {
			r.Release()
		}
		_, err := made[0].Send("inc").Await(ctx)
		require.ErrorIs(t, err, ErrReleased)
		require.Equal(t, 501, awaitValue[int](t, ctx, made[501].Send("inc")), "the 501st answers its number")

		// Drop everything.
		require.Equal(t, n/2, awaitValue[int](t, ctx, release.Send("release-all")))
		require.Equal(t, n/2, awaitValue[int](t, ctx, forget.Send("forget")))
	}()
	requireDrained(t, sa, sb)
}

// gatedConn is a net.Conn whose writes can be held back, to keep a message
// in flight as long as a test needs.
type gatedConn struct {
	net.Conn
	mu   sync.Mutex
	open chan struct{} // closed while writes may proceed
}

func newGatedConn(c net.Conn) *gatedConn {
	g := &gatedConn{Conn: c, open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *gatedConn) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = make(chan struct{})
}

func (g *gatedConn) resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

// Close lets a held write go on, to fail.
func (g *gatedConn) Close() error {
	err := g.Conn.Close()
	g.resume()
	return err
}

func (g *gatedConn) Write(b []byte) (int, error) {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	<-open
	return g.Conn.Write(b)
}

// exportCount returns how many times s sent its export of t, not yet
// released (0 if it is not exported).
func exportCount(s *Session, t target) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.ids[t]; ok {
		return s.exports[id].count
	}
	return 0
}

// TestReleaseRacingFreshExport: the importer releases the copy of a
// reference it holds while the exporter has already sent it a new copy.
// The release carries the number of copies the importer received, so the
// exporter keeps the object for the copy in flight, and the importer can
// call it through the new copy.
func TestReleaseRacingFreshExport(t *testing.T) {
	ctx := testCtx(t)
	vb := newTestVat(t, "b")
	var a, b Node
	obj := vb.Spawn(&numbered{id: 7})
	b.Bind("obj", obj)
	ca, cb := net.Pipe()
	gated := newGatedConn(cb) // B's writes to A
	sa, sb := connectConns(t, ctx, &a, &b, ca, gated)

	func() {
		old := awaitRef(t, ctx, sa.Fetch("obj"))
		require.Equal(t, 7, awaitValue[int](t, ctx, old.Send("inc")))
		require.EqualValues(t, 1, exportCount(sb, obj.t))

		gated.hold() // B writes nothing more for now
		fresh := sa.Fetch("obj")
		require.Eventually(t, func() bool { return exportCount(sb, obj.t) == 2 }, 5*time.Second, time.Millisecond,
			"B sent the second copy (it waits on the wire)")

		old.Release() // the release of the first copy leaves; the second is in flight
		require.Eventually(t, func() bool { return exportCount(sb, obj.t) == 1 }, 5*time.Second, time.Millisecond,
			"B received the release of one copy")
		gated.resume()

		r := awaitRef(t, ctx, fresh)
		require.Equal(t, 7, awaitValue[int](t, ctx, r.Send("inc")), "the object stays callable through the new copy")
		_, err := old.Send("inc").Await(ctx)
		require.ErrorIs(t, err, ErrReleased, "the released copy stays released")
		require.Equal(t, 1, sb.Stats().Exports)
	}()
	requireDrained(t, sa, sb)
}

// TestReleaseRacingFreshExportStress repeats the race without holding
// anything back: fetch, call, release while a fetch of the same object is
// in flight. Whichever way each race goes, every call through a reference
// that was not released succeeds, and the tables drain.
func TestReleaseRacingFreshExportStress(t *testing.T) {
	ctx := testCtx(t)
	vb := newTestVat(t, "b")
	var a, b Node
	b.Bind("obj", vb.Spawn(&numbered{id: 7}))
	sa, sb := pipeNodes(t, ctx, &a, &b)
	func() {
		cur := awaitRef(t, ctx, sa.Fetch("obj"))
		raced := 0
		for i := 0; i < 200; i++ {
			next := sa.Fetch("obj")
			if i%2 == 0 {
				cur.Release() // usually before the next copy arrives here
			}
			r := awaitRef(t, ctx, next)
			if i%2 == 1 {
				cur.Release() // after the next copy arrived
			}
			if r == cur {
				// The copy arrived while cur was held: it is the same
				// import, now released.
				_, err := r.Send("inc").Await(ctx)
				require.ErrorIs(t, err, ErrReleased)
				r = awaitRef(t, ctx, sa.Fetch("obj"))
			} else {
				raced++
			}
			require.Equal(t, 7, awaitValue[int](t, ctx, r.Send("inc")), "round %d", i)
			cur = r
		}
		t.Logf("%d of 200 releases left before the next copy arrived", raced)
		cur.Release()
	}()
	requireDrained(t, sa, sb)
}

// TestFailedSendUndoesItsExports: a message that cannot be sent (one of
// its references was released) exports nothing, also not the references
// before the bad one.
func TestFailedSendUndoesItsExports(t *testing.T) {
	ctx := testCtx(t)
	va, vb := newTestVat(t, "a"), newTestVat(t, "b")
	var a, b Node
	b.Bind("keeper", vb.Spawn(newKeeper()))
	b.Bind("obj", vb.Spawn(&numbered{}))
	sa, sb := pipeNodes(t, ctx, &a, &b)
	func() {
		k := awaitRef(t, ctx, sa.Fetch("keeper"))
		gone := awaitRef(t, ctx, sa.Fetch("obj"))
		gone.Release()
		var bd bundle
		bd.List = []Ref{va.Spawn(&numbered{}), va.Spawn(&numbered{}), gone}
		_, err := k.Send("keep", bd).Await(ctx)
		require.ErrorIs(t, err, ErrReleased)
		require.Zero(t, sa.Stats().Exports, "nothing was sent, so nothing is exported")
		require.NoError(t, k.SendOnly("keep", bd)) // SendOnly cannot see the failure...
		require.Zero(t, sa.Stats().Exports, "...but exports nothing either")
	}()
	requireDrained(t, sa, sb)
}
