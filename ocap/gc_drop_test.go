package ocap

import (
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type holder struct{ got []Ref }

func (h *holder) Take(r Ref) int { h.got = append(h.got, r); return len(h.got) }
func (h *holder) Drop()          { h.got = nil }

func TestGCDropsExportsOfDroppedRefs(t *testing.T) {
	ctx := testCtx(t)
	va, vb := NewVat("a"), NewVat("b")
	defer va.Close()
	defer vb.Close()
	var a, b Node
	b.Bind("holder", vb.Spawn(&holder{}))
	sa, sb, err := Pipe(ctx, &a, &b)
	require.NoError(t, err)
	defer sb.Close()
	defer sa.Close()
	h, err := sa.Fetch("holder").Await(ctx)
	require.NoError(t, err)
	hr, err := h.Ref()
	require.NoError(t, err)
	for i := 0; i < 1000; i++ {
		c := va.Spawn(&car{"x", "y"})
		hr.Send("take", c)
		hr.Send("take", c)
	}
	_, err = hr.Send("take", va.Spawn(&car{"z", "z"})).Await(ctx)
	require.NoError(t, err)
	require.Equal(t, 1001, sa.Stats().Exports)
	require.Equal(t, 1001, sb.Stats().Imports)
	_, err = hr.Send("drop").Await(ctx)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		runtime.GC()
		return sa.Stats().Exports == 0 && sb.Stats().Imports == 0 && sa.Stats().Questions == 0
	}, 5*time.Second, 10*time.Millisecond, "%+v %+v", sa.Stats(), sb.Stats())
	require.Eventually(t, func() bool {
		runtime.GC()
		return sb.Stats().Answers == 0
	}, 5*time.Second, 10*time.Millisecond, "%+v %+v", sa.Stats(), sb.Stats())
}
