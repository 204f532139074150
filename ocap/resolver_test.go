package ocap

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestResolverFulfilBreakAndPipeline(t *testing.T) {
	ctx := testCtx(t)
	vat := NewVat("r")
	defer vat.Close()
	p, r := NewPromise()
	drive := p.Send("drive") // waits for the resolution
	require.NoError(t, r.Fulfil(vat.Spawn(&car{"Beetle", "yellow"})))
	require.ErrorIs(t, r.Fulfil(1), errSettled)
	res, err := drive.Await(ctx)
	require.NoError(t, err)
	v, _ := res.Value()
	require.Equal(t, "The yellow Beetle goes vroom!", v)

	p2, r2 := NewPromise()
	boom := errors.New("boom")
	r2.Break(boom)
	_, err = p2.Await(ctx)
	require.ErrorIs(t, err, boom)

	// An actor answering with a value computed from another promise.
	c := vat.Spawn(&car{"Mini", "red"})
	relay := vat.Spawn(Methods{"relay": func(ctx context.Context) (*Promise, error) {
		out, res := NewPromise()
		err := On(ctx, c.Send("drive"), func(r Result) {
			var s string
			if err := r.Decode(&s); err != nil {
				res.Break(err)
				return
			}
			res.Fulfil("relayed: " + s)
		}, res.Break)
		return out, err
	}})
	res, err = relay.Send("relay").Await(ctx)
	require.NoError(t, err)
	v, _ = res.Value()
	require.Equal(t, "relayed: The red Mini goes vroom!", v)
}
