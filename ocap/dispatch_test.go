package ocap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/bokbok-go/bokbok/internal/testutil"
)

// calc has one method of every form a message can invoke, and some that
// no message can.
type calc struct{ total int }

func (c *calc) Add(x, y int) int                                         { return x + y }
func (c *calc) Div(x, y int) (int, error)                                { return divide(x, y) }
func (c *calc) Check(ok bool) error                                      { return checked(ok) }
func (c *calc) Accumulate(n int)                                         { c.total += n }
func (c *calc) Total() int                                               { return c.total }
func (c *calc) VatName(ctx context.Context) string                       { return VatOf(ctx).Name() }
func (c *calc) Scale(ctx context.Context, x float64, by float64) float64 { return x * by }
func (c *calc) Greet(p person) string                                    { return "hello " + p.Name }
func (c *calc) Panic(msg string) int                                     { panic(msg) }
func (c *calc) HTTPStatus() int                                          { return 200 }
func (c *calc) Sum(xs ...int) int                                        { return len(xs) }   // variadic: not invocable
func (c *calc) Three() (int, int, error)                                 { return 1, 2, nil } // not invocable
func (c *calc) Pair() (int, int)                                         { return 1, 2 }      // not invocable

type person struct {
	Name string
	Age  int
}

func divide(x, y int) (int, error) {
	if y == 0 {
		return 0, errors.New("division by zero")
	}
	return x / y, nil
}

func checked(ok bool) error {
	if !ok {
		return bokbok.Errorf("calc.not_ok", "not ok")
	}
	return nil
}

// TestReflectionDispatch: a value's exported methods answer messages by
// their Go name and their kebab-case name; the method forms are those of
// Methods; what does not fit breaks the promise with a typed error.
func TestReflectionDispatch(t *testing.T) {
	ctx := testCtx(t)
	v := newTestVat(t, "calc")
	c := v.Spawn(&calc{})

	type want struct {
		value any    // decoded into the same type
		code  string // a *bokbok.RemoteError code
		err   string // part of the error's text
	}
	cases := []struct {
		name   string
		method string
		args   []any
		want   want
	}{
		{"value result", "Add", []any{2, 3}, want{value: 5}},
		{"kebab name", "add", []any{2, 3}, want{value: 5}},
		{"value and nil error", "div", []any{7, 2}, want{value: 3}},
		{"value and error", "div", []any{7, 0}, want{err: "division by zero"}},
		{"error only, nil", "check", []any{true}, want{value: nil}},
		{"error only, remote error keeps its code", "check", []any{false}, want{code: "calc.not_ok"}},
		{"no result", "accumulate", []any{5}, want{value: nil}},
		{"state kept between messages", "total", nil, want{value: 5}},
		{"context first", "vat-name", nil, want{value: "calc"}},
		{"context and arguments", "scale", []any{1.5, 2.0}, want{value: 3.0}},
		{"struct argument", "greet", []any{person{Name: "Ada"}}, want{value: "hello Ada"}},
		{"acronym in the name", "http-status", nil, want{value: 200}},
		{"acronym, Go name", "HTTPStatus", nil, want{value: 200}},
		{"too few arguments", "add", []any{1}, want{code: CodeBadArgs, err: "takes 2 arguments, got 1"}},
		{"too many arguments", "add", []any{1, 2, 3}, want{code: CodeBadArgs, err: "takes 2 arguments, got 3"}},
		{"argument of the wrong type", "add", []any{"one", 2}, want{code: CodeBadArgs, err: "argument 1"}},
		{"struct of the wrong type", "greet", []any{42}, want{code: CodeBadArgs, err: "argument 1"}},
		{"unknown method", "subtract", []any{1, 2}, want{code: CodeNoMethod, err: `"subtract"`}},
		{"variadic methods are not invocable", "sum", []any{1}, want{code: CodeNoMethod}},
		{"three results are not invocable", "three", nil, want{code: CodeNoMethod}},
		{"a second result that is not an error", "pair", nil, want{code: CodeNoMethod}},
		{"panic", "panic", []any{"boom"}, want{code: CodePanic, err: "boom"}},
		{"after a panic the actor goes on", "add", []any{1, 1}, want{value: 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := c.Send(tc.method, tc.args...).Await(ctx)
			if tc.want.code != "" || tc.want.err != "" {
				require.Error(t, err)
				if tc.want.code != "" {
					requireRemoteCode(t, err, tc.want.code)
				}
				require.ErrorContains(t, err, tc.want.err)
				return
			}
			require.NoError(t, err)
			got, err := r.Value()
			require.NoError(t, err)
			if tc.want.value == nil {
				require.Nil(t, got)
				return
			}
			// Numbers come back in their msgpack form; compare as text.
			require.Equal(t, fmt.Sprint(tc.want.value), fmt.Sprint(got))
		})
	}
}

func TestMethodName(t *testing.T) {
	for in, want := range map[string]string{
		"MakeCar":    "make-car",
		"Drive":      "drive",
		"HTTPGet":    "http-get",
		"URLForID":   "url-for-id",
		"ID":         "id",
		"A":          "a",
		"Get2Things": "get2-things",
		"IsLocal":    "is-local",
	} {
		require.Equal(t, want, MethodName(in), in)
	}
}

// TestMethodsTable: a Methods table is an actor; each entry has one of the
// forms a reflected method may have.
func TestMethodsTable(t *testing.T) {
	ctx := testCtx(t)
	v := newTestVat(t, "m")
	n := 0
	m := v.Spawn(Methods{
		"inc":  func(by int) int { n += by; return n },
		"get":  func() int { return n },
		"fail": func() error { return errors.New("failed") },
		"vat":  func(ctx context.Context) (string, error) { return VatOf(ctx).Name(), nil },
		"nop":  func() {},
	})
	require.Equal(t, 3, awaitValue[int](t, ctx, m.Send("inc", 3)))
	require.Equal(t, 5, awaitValue[int](t, ctx, m.Send("inc", 2)))
	require.Equal(t, 5, awaitValue[int](t, ctx, m.Send("get")))
	require.Equal(t, "m", awaitValue[string](t, ctx, m.Send("vat")))
	_, err := m.Send("fail").Await(ctx)
	require.EqualError(t, err, "failed", "a local actor's error arrives as it is")
	_, err = m.Send("nop").Await(ctx)
	require.NoError(t, err)
	_, err = m.Send("Inc", 1).Await(ctx)
	requireRemoteCode(t, err, CodeNoMethod) // table names are used as they are
	_, err = m.Send("inc").Await(ctx)
	requireRemoteCode(t, err, CodeBadArgs)

	require.PanicsWithError(t, `ocap: method "x": not a function`, func() { v.Spawn(Methods{"x": 42}) })
	require.Panics(t, func() { v.Spawn(Methods{"x": func(...int) {}}) })
	require.Panics(t, func() { v.Spawn(struct{}{}) }, "nothing to invoke")
	require.Panics(t, func() { v.Spawn(nil) })
	_, err = Spawn(context.Background(), echo{})
	require.ErrorIs(t, err, ErrNoVat)
	require.NoError(t, v.Do(ctx, func(ctx context.Context) {
		_, err := Spawn(ctx, struct{}{})
		require.ErrorContains(t, err, "no exported method")
		r, err := Spawn(ctx, echo{})
		require.NoError(t, err)
		require.True(t, r.IsLocal())
	}))
}

// account is an Actor: it decodes its own arguments.
type account struct{ balance int }

func (a *account) Receive(ctx context.Context, m *Message) (any, error) {
	switch m.Method {
	case "deposit":
		var n int
		if err := m.Args(&n); err != nil {
			return nil, err
		}
		a.balance += n
		return a.balance, nil
	case "transfer":
		var n int
		var to Ref
		if err := m.Args(&n, &to); err != nil {
			return nil, err
		}
		a.balance -= n
		return to.Send("deposit", n), nil // chains: answers as the deposit does
	}
	return nil, bokbok.Errorf(CodeNoMethod, "account has no method %q", m.Method)
}

func TestActorInterface(t *testing.T) {
	ctx := testCtx(t)
	va, vb := newTestVat(t, "a"), newTestVat(t, "b")
	alice, bob := va.Spawn(&account{}), vb.Spawn(&account{balance: 10})
	require.Equal(t, 100, awaitValue[int](t, ctx, alice.Send("deposit", 100)))
	require.Equal(t, 40, awaitValue[int](t, ctx, alice.Send("transfer", 30, bob)), "bob's balance after the deposit")
	_, err := alice.Send("deposit").Await(ctx)
	requireRemoteCode(t, err, CodeBadArgs)
	_, err = alice.Send("deposit", "lots").Await(ctx)
	requireRemoteCode(t, err, CodeBadArgs)
	_, err = alice.Send("withdraw", 1).Await(ctx)
	requireRemoteCode(t, err, CodeNoMethod)
	require.Contains(t, alice.String(), "account")
}

// nested has references at every depth msgpack allows.
type nested struct {
	Name    string
	Friends []Ref
	ByName  map[string]Ref
	Inner   struct{ Best Ref }
	Promise Ref
	None    Ref
}

// nester answers nested values with its own references in them, and
// calls the ones it is given.
type nester struct{ name string }

func (g *nester) Name() string { return g.name }

// Twin spawns another nester of the same name.
func (g *nester) Twin(ctx context.Context) (Ref, error) { return Spawn(ctx, &nester{name: g.name}) }

func (g *nester) CallAll(n nested) (*Promise, error) {
	var last *Promise
	for _, r := range append(append([]Ref{}, n.Friends...), n.Inner.Best, n.ByName["x"], n.Promise) {
		last = r.Send("name")
	}
	if !n.None.IsZero() {
		return nil, errors.New("the zero Ref arrives as the zero Ref")
	}
	return last, nil
}

func (g *nester) Wrap(ctx context.Context) (nested, error) {
	me, err := Spawn(ctx, &nester{name: g.name + "'"})
	if err != nil {
		return nested{}, err
	}
	n := nested{Name: g.name, Friends: []Ref{me, me}, ByName: map[string]Ref{"x": me}}
	n.Inner.Best = me
	n.Promise = me.Send("twin").Ref()
	return n, nil
}

// TestNestedReferences: references travel at any depth, locally and
// across a connection, and arrive usable; Result decodes them into Ref
// fields, into any (as Ref values) and as a single Ref.
func TestNestedReferences(t *testing.T) {
	ctx := testCtx(t)
	va, vb := newTestVat(t, "a"), newTestVat(t, "b")
	var a, b Node
	b.Bind("nester", vb.Spawn(&nester{name: "bea"}))
	sa, sb := pipeNodes(t, ctx, &a, &b)
	func() {
		for _, tc := range []struct {
			name, nester string
			g            Ref
		}{
			{"local", "al", va.Spawn(&nester{name: "al"})},
			{"remote", "bea", awaitRef(t, ctx, sa.Fetch("nester"))},
		} {
			g, name := tc.g, tc.name
			t.Run(name, func(t *testing.T) {
				r := await(t, ctx, g.Send("wrap"))
				var n nested
				require.NoError(t, r.Decode(&n))
				require.Len(t, n.Friends, 2)
				require.Equal(t, n.Friends[0], n.Friends[1], "one reference, sent twice, arrives as one")
				require.Equal(t, n.Friends[0], n.ByName["x"])
				require.Equal(t, n.Friends[0], n.Inner.Best)
				require.True(t, n.None.IsZero())
				require.Equal(t, name == "local", n.Friends[0].IsLocal())
				require.Equal(t, tc.nester+"'", awaitValue[string](t, ctx, n.Promise.Send("name")),
					"a promise in a value travels as a reference to it")
				whose := awaitValue[string](t, ctx, n.Friends[0].Send("name"))
				require.Equal(t, tc.nester+"'", whose)

				// The same value decoded into any: maps, slices, and Refs.
				v, err := r.Value()
				require.NoError(t, err)
				m := v.(map[string]any)
				friends := m["Friends"].([]any)
				require.IsType(t, Ref{}, friends[0])
				require.Equal(t, n.Friends[0], friends[0].(Ref))
				_, err = r.Ref()
				require.ErrorIs(t, err, ErrNotReference, "a struct is not a single reference")

				// And sent back in: the actor calls every one of them.
				require.Equal(t, whose, awaitValue[string](t, ctx, g.Send("call-all", n)))
			})
		}
	}()
	requireDrained(t, sa, sb)
}

func TestResult(t *testing.T) {
	ctx := testCtx(t)
	v := newTestVat(t, "r")
	e := v.Spawn(echo{})
	r := await(t, ctx, e.Send("echo", map[string]any{"n": 1, "s": []any{"a", true}}))
	val, err := r.Value()
	require.NoError(t, err)
	require.Equal(t, map[string]any{"n": int64(1), "s": []any{"a", true}}, val)
	var typed struct {
		N int   `msgpack:"n"`
		S []any `msgpack:"s"`
	}
	require.NoError(t, r.Decode(&typed), "a Result decodes any number of times")
	require.Equal(t, 1, typed.N)
	var wrong int
	require.Error(t, r.Decode(&wrong))

	ref := awaitRef(t, ctx, e.Send("echo-ref", e))
	require.Equal(t, e, ref, "a local reference comes back as itself")
	var asAny any
	require.NoError(t, await(t, ctx, e.Send("echo-ref", e)).Decode(&asAny))
	require.Equal(t, e, asAny)

	_, err = Ref{}.Send("x").Await(ctx)
	require.ErrorIs(t, err, ErrNilRef)
	require.ErrorIs(t, Ref{}.SendOnly("x"), ErrNilRef)
	require.True(t, Ref{}.IsZero())
	require.Equal(t, "ocap.Ref(nil)", Ref{}.String())
	require.Contains(t, e.String(), `vat "r"`)

	// A Ref can travel only in capability messages.
	_, err = msgpack.Marshal(e)
	require.ErrorContains(t, err, "only in a capability message")
	// An argument that cannot be encoded breaks the promise at once.
	p := e.Send("echo", make(chan int))
	require.True(t, p.Settled())
	_, err = p.Await(ctx)
	require.Error(t, err)
	require.Error(t, e.SendOnly("echo", make(chan int)))
	// A promise that resolved to something else cannot be sent to.
	_, err = e.Send("echo", 1).Send("echo", 2).Await(ctx)
	require.ErrorIs(t, err, ErrNotReference)
	// Await gives up with its context.
	blk := newBlocker(Ref{})
	release := releaser(t, blk)
	slow := v.Spawn(blk)
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	_, err = slow.Send("block", "x").Await(short)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	release()
}

// TestPromiseChaining: an actor that answers a *Promise answers as that
// promise settles, with its value or its error, locally and across a
// connection; messages sent to the outer promise reach what the inner one
// resolves to.
func TestPromiseChaining(t *testing.T) {
	ctx := testCtx(t)
	va, vb := newTestVat(t, "a"), newTestVat(t, "b")
	var a, b Node
	b.Bind("factory", vb.Spawn(factory{}))
	b.Bind("calc", vb.Spawn(&calc{}))
	sa, sb := pipeNodes(t, ctx, &a, &b)
	func() {
		f := awaitRef(t, ctx, sa.Fetch("factory"))
		c := awaitRef(t, ctx, sa.Fetch("calc"))
		chain := va.Spawn(Methods{
			"via": func(to Ref, method string, args []any) *Promise { return to.Send(method, args...) },
		})
		require.Equal(t, 4, awaitValue[int](t, ctx, chain.Send("via", c, "div", []any{8, 2})))
		_, err := chain.Send("via", c, "div", []any{8, 0}).Await(ctx)
		requireRemoteCode(t, err, CodeError) // a plain error, from the peer
		require.ErrorContains(t, err, "division by zero")
		carP := chain.Send("via", f, "make-car", []any{"Zoom", "red"})
		require.Equal(t, "The red Zoom goes vroom!", awaitValue[string](t, ctx, carP.Send("drive")))
		// Chains of chains.
		require.Equal(t, 4, awaitValue[int](t, ctx, chain.Send("via", chain, "via", []any{c, "add", []any{2, 2}})))
	}()
	requireDrained(t, sa, sb)
}

// TestOnRunsInTheVat: On callbacks run in the vat of the turn that
// registered them, in turns of their own, after that turn; never
// concurrently with the vat's actors (the race detector watches the
// unguarded log they share).
func TestOnRunsInTheVat(t *testing.T) {
	ctx := testCtx(t)
	v, other := newTestVat(t, "home"), newTestVat(t, "other")
	var log []string // touched only in v's goroutine
	sums := 0        // likewise
	logger := v.Spawn(Methods{"log": func(s string) { log = append(log, s) }})
	adder := other.Spawn(&calc{})
	done := make(chan struct{})
	require.NoError(t, v.Do(ctx, func(ctx context.Context) {
		for i := 0; i < 10; i++ {
			err := On(ctx, adder.Send("add", i, i), func(r Result) {
				var n int
				_ = r.Decode(&n)
				log = append(log, fmt.Sprint("sum ", n))
				if sums++; sums == 10 {
					close(done)
				}
			}, nil)
			require.NoError(t, err)
			logger.SendOnly("log", fmt.Sprint("message ", i))
		}
		log = append(log, "turn ends")
	}))
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("callbacks did not run")
	}
	require.NoError(t, v.Do(ctx, func(context.Context) {
		require.Equal(t, "turn ends", log[0], "callbacks run after the turn that registered them")
		require.Len(t, log, 21)
	}))

	// A broken promise runs the broken callback; nil callbacks are fine.
	errs := make(chan error, 1)
	require.NoError(t, v.Do(ctx, func(ctx context.Context) {
		require.NoError(t, On(ctx, adder.Send("div", 1, 0), func(Result) { t.Error("fulfilled") }, func(err error) { errs <- err }))
		require.NoError(t, On(ctx, adder.Send("add", 1, 1), nil, nil))
	}))
	require.ErrorContains(t, <-errs, "division by zero")

	// Outside a vat, On refuses.
	require.ErrorIs(t, On(context.Background(), adder.Send("add", 1, 1), nil, nil), ErrNoVat)
	require.Nil(t, VatOf(context.Background()))

	// A panicking callback is logged, and the vat goes on.
	var logged syncBuffer
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.NewTextHandler(&logged, nil)))
	v.On(adder.Send("add", 1, 1), func(Result) { panic("callback") }, nil)
	require.Eventually(t, func() bool { return strings.Contains(logged.String(), "callback panicked") },
		5*time.Second, time.Millisecond)
	require.Equal(t, 2, awaitValue[int](t, ctx, v.Spawn(&calc{}).Send("add", 1, 1)))
}

// syncBuffer is a bytes.Buffer for concurrent writers.
type syncBuffer = testutil.SyncBuffer

// TestVatClose: closing a vat breaks the messages queued for its actors
// with ErrVatClosed (across a connection: code ocap.vat_closed), lets the
// turn in progress finish, and refuses later messages and Do.
func TestVatClose(t *testing.T) {
	ctx := testCtx(t)
	v := NewVat("closing")
	blk := newBlocker(Ref{})
	release := releaser(t, blk)
	r := v.Spawn(blk)
	inTurn := r.Send("block", "in turn")
	require.Equal(t, "in turn", <-blk.entered)
	var queued []*Promise
	for i := 0; i < 10; i++ {
		queued = append(queued, r.Send("ping"))
	}
	var mu sync.Mutex
	ranCallback := false
	v.On(queued[0], func(Result) { mu.Lock(); ranCallback = true; mu.Unlock() }, nil)
	require.NoError(t, v.Close())
	release()
	require.Equal(t, "in turn", awaitValue[string](t, ctx, inTurn), "the turn in progress finishes")
	for _, q := range queued {
		_, err := q.Await(ctx)
		require.ErrorIs(t, err, ErrVatClosed)
	}
	<-v.Done()
	_, err := r.Send("ping").Await(ctx)
	require.ErrorIs(t, err, ErrVatClosed)
	require.ErrorIs(t, v.Do(ctx, func(context.Context) {}), ErrVatClosed)
	mu.Lock()
	require.False(t, ranCallback, "callbacks of a closed vat do not run")
	mu.Unlock()

	// Across a connection.
	vb := NewVat("b")
	var a, b Node
	b.Bind("echo", vb.Spawn(echo{}))
	sa, _ := pipeNodes(t, ctx, &a, &b)
	e := awaitRef(t, ctx, sa.Fetch("echo"))
	vb.Close()
	<-vb.Done()
	_, err = e.Send("ping").Await(ctx)
	requireRemoteCode(t, err, CodeVatClosed)
}

// TestBootstrap: the bootstrap object answers "fetch" with what is bound
// to a name, and nothing else.
func TestBootstrap(t *testing.T) {
	ctx := testCtx(t)
	v := newTestVat(t, "b")
	var a, b Node
	b.Bind("echo", v.Spawn(echo{}))
	sa, _ := pipeNodes(t, ctx, &a, &b)
	require.Equal(t, "pong", awaitValue[string](t, ctx, sa.Fetch("echo").Send("ping")))
	_, err := sa.Fetch("nothing").Await(ctx)
	requireRemoteCode(t, err, CodeNotFound)
	_, err = sa.Bootstrap().Send("list").Await(ctx)
	requireRemoteCode(t, err, CodeNoMethod)
	_, err = sa.Bootstrap().Send("fetch").Await(ctx)
	requireRemoteCode(t, err, CodeBadArgs)
	b.Bind("echo", v.Spawn(&calc{})) // rebinding replaces
	require.Equal(t, 3, awaitValue[int](t, ctx, sa.Fetch("echo").Send("add", 1, 2)))
	b.Unbind("echo")
	_, err = sa.Fetch("echo").Await(ctx)
	requireRemoteCode(t, err, CodeNotFound)
	sa.Bootstrap().Release() // the bootstrap object cannot be released
	_, err = sa.Fetch("nothing").Await(ctx)
	requireRemoteCode(t, err, CodeNotFound)
}

// TestFallback: messages that are not capability messages go to the
// node's Fallback handler, on the same connection.
func TestFallback(t *testing.T) {
	ctx := testCtx(t)
	v := newTestVat(t, "b")
	var a, b Node
	b.Fallback = bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
		var s string
		if err := req.Decode(&s); err != nil {
			return nil, err
		}
		return "plain " + s, nil
	})
	b.Bind("echo", v.Spawn(echo{}))
	sa, _ := pipeNodes(t, ctx, &a, &b)
	var out string
	require.NoError(t, sa.Conn().Call(ctx, "hello", &out))
	require.Equal(t, "plain hello", out)
	require.Equal(t, "pong", awaitValue[string](t, ctx, sa.Fetch("echo").Send("ping")))
}

// TestZeroRefDecodes: the zero Ref travels as nil and decodes back into
// the zero Ref wherever a Ref can be: a method's argument, a struct
// field, a slice element, a map value, a whole result. A peer that sends
// nil where a Ref is expected cannot make decoding panic.
func TestZeroRefDecodes(t *testing.T) {
	ctx := testCtx(t)
	va, vb := newTestVat(t, "a"), newTestVat(t, "b")
	var a, b Node
	b.Bind("echo", vb.Spawn(echo{}))
	sa, sb := pipeNodes(t, ctx, &a, &b)
	type holder struct {
		R    Ref
		List []Ref
		ByID map[string]Ref
	}
	func() {
		for name, e := range map[string]Ref{"local": va.Spawn(echo{}), "remote": awaitRef(t, ctx, sa.Fetch("echo"))} {
			t.Run(name, func(t *testing.T) {
				r := await(t, ctx, e.Send("echo-ref", Ref{}))
				var got Ref
				require.NoError(t, r.Decode(&got))
				require.True(t, got.IsZero())
				ref, err := r.Ref()
				require.ErrorIs(t, err, ErrNotReference)
				require.True(t, ref.IsZero())

				in := holder{R: Ref{}, List: []Ref{{}, e}, ByID: map[string]Ref{"none": {}}}
				var out holder
				require.NoError(t, await(t, ctx, e.Send("echo", in)).Decode(&out))
				require.True(t, out.R.IsZero())
				require.Len(t, out.List, 2)
				require.True(t, out.List[0].IsZero())
				require.False(t, out.List[1].IsZero())
				require.True(t, out.ByID["none"].IsZero())

				var ptr *Ref
				require.NoError(t, await(t, ctx, e.Send("echo", nil)).Decode(&ptr))
				require.Nil(t, ptr)
			})
		}
	}()
	requireDrained(t, sa, sb)
}
