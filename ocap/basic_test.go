package ocap

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type car struct{ name, color string }

func (c *car) Drive() string { return fmt.Sprintf("The %s %s goes vroom!", c.color, c.name) }

type factory struct{}

func (factory) MakeCar(ctx context.Context, name, color string) (Ref, error) {
	return Spawn(ctx, &car{name, color})
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // generous: a loaded machine under -race is slow
	t.Cleanup(cancel)
	return ctx
}

func TestPipelineCarFactory(t *testing.T) {
	ctx := testCtx(t)
	vat := NewVat("server")
	defer vat.Close()
	var server, client Node
	server.Bind("factory", vat.Spawn(factory{}))
	cs, ss, err := Pipe(ctx, &client, &server)
	require.NoError(t, err)
	defer ss.Close()
	defer cs.Close()

	f := cs.Fetch("factory")
	carP := f.Send("make-car", "Explorist", "blue")
	noise := carP.Send("drive")
	r, err := noise.Await(ctx)
	require.NoError(t, err)
	var s string
	require.NoError(t, r.Decode(&s))
	require.Equal(t, "The blue Explorist goes vroom!", s)
}

func TestLocalSendAndErrors(t *testing.T) {
	ctx := testCtx(t)
	vat := NewVat("local")
	defer vat.Close()
	c := vat.Spawn(&car{"Model T", "black"})
	r, err := c.Send("Drive").Await(ctx)
	require.NoError(t, err)
	v, err := r.Value()
	require.NoError(t, err)
	require.Equal(t, "The black Model T goes vroom!", v)
	_, err = c.Send("fly").Await(ctx)
	require.ErrorContains(t, err, CodeNoMethod)
	_, err = c.Send("drive", 1).Await(ctx)
	require.ErrorContains(t, err, CodeBadArgs)
}
