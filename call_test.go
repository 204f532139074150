package bokbok

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

type specInner struct {
	Note string `msgpack:"note"`
}

type specPoint struct {
	X      int               `msgpack:"x"`
	Y      int               `msgpack:"y"`
	Label  string            `msgpack:"label"`
	Tags   []string          `msgpack:"tags"`
	Attrs  map[string]string `msgpack:"attrs"`
	Inner  *specInner        `msgpack:"inner"`
	Secret string            `msgpack:"-"`
}

// specDecodeAs decodes a request into a fresh T and answers f of it.
func specDecodeAs[T any](f func(T) (any, error)) HandlerFunc {
	return func(ctx context.Context, req *Request) (any, error) {
		var v T
		if err := req.Decode(&v); err != nil {
			return nil, err
		}
		return f(v)
	}
}

func TestCallEncodesAndDecodesValues(t *testing.T) {
	point := specPoint{
		X: 1, Y: -2, Label: "origin", Tags: []string{"a", "b"},
		Attrs: map[string]string{"k": "v"}, Inner: &specInner{Note: "deep"},
		Secret: "never sent",
	}
	cases := []struct {
		name    string
		handler HandlerFunc
		msg     any
		out     func() any // a pointer to decode the reply into
		want    any        // what out points to afterwards
	}{
		{
			name: "struct with msgpack tags, both ways",
			handler: specDecodeAs(func(p specPoint) (any, error) {
				if p.Secret != "" {
					return nil, errors.New("a field tagged \"-\" travelled")
				}
				p.X, p.Y, p.Label = p.X+10, p.Y*2, strings.ToUpper(p.Label)
				p.Inner.Note += "er"
				return p, nil
			}),
			msg: point,
			out: func() any { return new(specPoint) },
			want: &specPoint{X: 11, Y: -4, Label: "ORIGIN", Tags: []string{"a", "b"},
				Attrs: map[string]string{"k": "v"}, Inner: &specInner{Note: "deeper"}},
		},
		{
			name: "struct fields travel under their tag names",
			handler: specDecodeAs(func(m map[string]any) (any, error) {
				keys := make([]string, 0, len(m))
				for k := range m {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				return keys, nil
			}),
			msg:  point,
			out:  func() any { return new([]string) },
			want: &[]string{"attrs", "inner", "label", "tags", "x", "y"},
		},
		{
			name:    "pointer to struct",
			handler: specDecodeAs(func(p specPoint) (any, error) { return &p, nil }),
			msg:     &specPoint{Label: "p"},
			out:     func() any { return new(specPoint) },
			want:    &specPoint{Label: "p"},
		},
		{
			name: "map to a number",
			handler: specDecodeAs(func(m map[string]int) (any, error) {
				sum := 0
				for _, v := range m {
					sum += v
				}
				return sum, nil
			}),
			msg:  map[string]int{"a": 1, "b": 2, "c": 300000},
			out:  func() any { return new(int) },
			want: specPtr(300003),
		},
		{
			name:    "map decoded into an interface value",
			handler: specDecodeAs(func(m any) (any, error) { return m, nil }),
			msg:     map[string]any{"name": "bok", "list": []any{"x", true}},
			out:     func() any { return new(any) },
			want:    specPtr[any](map[string]any{"name": "bok", "list": []any{"x", true}}),
		},
		{
			name: "[]byte both ways",
			handler: specDecodeAs(func(b []byte) (any, error) {
				return specReversed(b), nil
			}),
			msg:  []byte{0, 1, 2, 255},
			out:  func() any { return new([]byte) },
			want: &[]byte{255, 2, 1, 0},
		},
		{
			name: "large []byte spanning frames",
			handler: specDecodeAs(func(b []byte) (any, error) {
				return len(b), nil
			}),
			msg:  make([]byte, 300<<10),
			out:  func() any { return new(int) },
			want: specPtr(300 << 10),
		},
		{
			name:    "slice of structs",
			handler: specDecodeAs(func(ps []specInner) (any, error) { return len(ps), nil }),
			msg:     []specInner{{"a"}, {"b"}, {"c"}},
			out:     func() any { return new(int) },
			want:    specPtr(3),
		},
		{
			name:    "string",
			handler: specDecodeAs(func(s string) (any, error) { return s + "!", nil }),
			msg:     "bok",
			out:     func() any { return new(string) },
			want:    specPtr("bok!"),
		},
		{
			name:    "negative and large integers",
			handler: specDecodeAs(func(n int64) (any, error) { return -n, nil }),
			msg:     int64(1) << 40,
			out:     func() any { return new(int64) },
			want:    specPtr(-(int64(1) << 40)),
		},
		{
			name:    "float and bool",
			handler: specDecodeAs(func(f float64) (any, error) { return f > 1, nil }),
			msg:     1.5,
			out:     func() any { return new(bool) },
			want:    specPtr(true),
		},
		{
			name: "nil message and nil reply",
			handler: specDecodeAs(func(v any) (any, error) {
				if v != nil {
					return nil, fmt.Errorf("got %v, want nil", v)
				}
				return nil, nil
			}),
			msg:  nil,
			out:  func() any { return new(*specPoint) },
			want: new(*specPoint),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			client, _ := pipePair(t, &Config{}, &Config{Handler: tc.handler})
			out := tc.out()
			require.NoError(t, client.Call(ctx, tc.msg, out))
			assert.Equal(t, tc.want, out)
		})
	}
}

func specPtr[T any](v T) *T { return &v }

func TestCallWithNilOutDiscardsReply(t *testing.T) {
	ctx := testCtx(t)
	var ran atomic.Int64
	client, _ := pipePair(t, &Config{}, &Config{Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		ran.Add(1)
		return specPoint{Label: "ignored"}, nil
	})})
	require.NoError(t, client.Call(ctx, "anything", nil))
	assert.EqualValues(t, 1, ran.Load(), "the handler ran although the reply was discarded")
}

func TestRequestReturnsRawResponse(t *testing.T) {
	ctx := testCtx(t)
	client, _ := pipePair(t, &Config{}, &Config{Handler: specDecodeAs(func(m map[string]int) (any, error) {
		return map[string]int{"n": m["n"] + 1}, nil
	})})
	resp, err := client.Request(ctx, map[string]int{"n": 41})
	require.NoError(t, err)
	want, err := msgpack.Marshal(map[string]int{"n": 42})
	require.NoError(t, err)
	var viaRaw, viaDecode map[string]int
	require.NoError(t, msgpack.Unmarshal(resp.Raw(), &viaRaw))
	require.NoError(t, resp.Decode(&viaDecode))
	var wantMap map[string]int
	require.NoError(t, msgpack.Unmarshal(want, &wantMap))
	assert.Equal(t, wantMap, viaRaw)
	assert.Equal(t, wantMap, viaDecode)
}

func TestCallLocalEncodingAndDecodingErrors(t *testing.T) {
	ctx := testCtx(t)
	var ran atomic.Int64
	client, _ := pipePair(t, &Config{}, &Config{Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		ran.Add(1)
		return "a string", nil
	})})

	err := client.Call(ctx, make(chan int), nil)
	require.Error(t, err, "a message msgpack cannot encode fails before sending")
	var re *RemoteError
	assert.False(t, errors.As(err, &re), "an encoding error is local, not remote: %v", err)
	assert.Zero(t, ran.Load(), "nothing was sent")

	var n int
	err = client.Call(ctx, "x", &n)
	require.Error(t, err, "a reply that does not fit out fails to decode")
	assert.False(t, errors.As(err, &re), "a decoding error is local, not remote: %v", err)
	assert.EqualValues(t, 1, ran.Load())

	var s string
	require.NoError(t, client.Call(ctx, "x", &s), "the connection is still usable")
	assert.Equal(t, "a string", s)
}

func TestPanickingHandlerLeavesConnectionWorking(t *testing.T) {
	ctx := testCtx(t)
	client, server := pipePair(t, &Config{Handler: specSide("client")}, &Config{Handler: HandlerFunc(
		func(ctx context.Context, req *Request) (any, error) {
			var m specMsg
			if err := req.Decode(&m); err != nil {
				return nil, err
			}
			if m.Op == "panic" {
				var nilMap map[string]int
				nilMap["x"] = 1 // a runtime panic, not just panic(string)
			}
			return specReply{Side: "server", N: m.N}, nil
		})})

	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			err := client.Call(ctx, specMsg{Op: "panic"}, nil)
			var re *RemoteError
			if assert.ErrorAs(t, err, &re) {
				assert.Equal(t, CodePanic, re.Code)
			}
		})
		wg.Go(func() {
			var r specReply
			if assert.NoError(t, client.Call(ctx, specMsg{Op: "echo", N: i}, &r)) {
				assert.Equal(t, i, r.N)
			}
		})
	}
	wg.Wait()
	var r specReply
	require.NoError(t, server.Call(ctx, specMsg{Op: "double", N: 2}, &r), "the panicking side can still call out")
	assert.Equal(t, 4, r.N)
	assert.NoError(t, client.Err())
	assert.NoError(t, server.Err())
}

// specBlocker is a handler that reports each request it starts and then
// waits for its context to end, reporting how it ended.
type specBlocker struct {
	started chan string
	ended   chan error
	release chan struct{} // closed by let, to let the handlers return
	let     func()
}

func newSpecBlocker(t testing.TB) *specBlocker {
	release, let := specReleaser(t)
	return &specBlocker{started: make(chan string, 100), ended: make(chan error, 100), release: release, let: let}
}

func (b *specBlocker) ServeBokbok(ctx context.Context, req *Request) (any, error) {
	var m specMsg
	if err := req.Decode(&m); err != nil {
		return nil, err
	}
	b.started <- m.Op
	<-ctx.Done()
	b.ended <- ctx.Err()
	<-b.release
	return nil, ctx.Err()
}

func TestCancelStopsCallerAndRemoteHandler(t *testing.T) {
	for _, tr := range specTransports[:2] {
		t.Run(tr.name, func(t *testing.T) {
			ctx := testCtx(t)
			b := newSpecBlocker(t)
			client, _ := tr.open(t, &Config{}, &Config{Handler: b})

			callCtx, cancel := context.WithCancel(ctx)
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- client.Call(callCtx, specMsg{Op: "wait"}, nil) }()
			specAwait(t, ctx, b.started, "the handler to start")

			cancel()
			// The caller returns at once: its handler is still blocked (it
			// waits for release, which comes only after this).
			require.ErrorIs(t, specAwait(t, ctx, errc, "the cancelled call to return"), context.Canceled)
			// And the handler on the other side sees its context cancelled.
			assert.ErrorIs(t, specAwait(t, ctx, b.ended, "the remote handler's context to end"), context.Canceled)
			b.let()

			// The connection goes on.
			_, err := client.Ping(ctx)
			require.NoError(t, err)
		})
	}
}

func TestCallWithDoneContextSendsNothing(t *testing.T) {
	ctx := testCtx(t)
	var ran atomic.Int64
	client, _ := pipePair(t, &Config{}, &Config{Handler: HandlerFunc(func(context.Context, *Request) (any, error) {
		ran.Add(1)
		return nil, nil
	})})
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	assert.ErrorIs(t, client.Call(cancelled, "x", nil), context.Canceled)
	expired, cancel2 := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel2()
	assert.ErrorIs(t, client.Call(expired, "x", nil), context.DeadlineExceeded)
	assert.ErrorIs(t, client.Notify(cancelled, "x"), context.Canceled)
	require.NoError(t, client.Call(ctx, "x", nil))
	assert.EqualValues(t, 1, ran.Load(), "only the call with a live context ran")
}

// specQueued reports how many of the peer's requests wait for a handler
// slot on c. (White-box: the queue is not observable from outside.)
func specQueued(c *Conn) int {
	c.in.mu.Lock()
	defer c.in.mu.Unlock()
	return len(c.in.queue)
}

func TestCancelledQueuedRequestNeverRuns(t *testing.T) {
	ctx := testCtx(t)
	release, let := specReleaser(t)
	var mu sync.Mutex
	var ran []string
	started := make(chan struct{}, 10)
	handler := specDecodeAs(func(m specMsg) (any, error) {
		mu.Lock()
		ran = append(ran, m.Op)
		mu.Unlock()
		started <- struct{}{}
		if m.Op == "hold" {
			<-release
		}
		return m.Op, nil
	})
	client, server := pipePair(t, &Config{}, &Config{Handler: handler, MaxConcurrentHandlers: 1})

	held := make(chan error, 1)
	go func() { held <- client.Call(ctx, specMsg{Op: "hold"}, nil) }()
	specAwait(t, ctx, started, "the first request to run")

	queuedCtx, cancel := context.WithCancel(ctx)
	queued := make(chan error, 1)
	go func() { queued <- client.Call(queuedCtx, specMsg{Op: "queued"}, nil) }()
	require.Eventually(t, func() bool { return specQueued(server) == 1 }, 5*time.Second, time.Millisecond,
		"the second request waits for the only handler slot")

	cancel()
	require.ErrorIs(t, specAwait(t, ctx, queued, "the cancelled call"), context.Canceled)
	// A PING travels behind the CANCEL: once it is answered, the peer has
	// dropped the queued request.
	_, err := client.Ping(ctx)
	require.NoError(t, err)
	assert.Zero(t, specQueued(server))

	let()
	require.NoError(t, specAwait(t, ctx, held, "the first call"))
	var op string
	require.NoError(t, client.Call(ctx, specMsg{Op: "after"}, &op))
	assert.Equal(t, "after", op)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"hold", "after"}, ran, "the cancelled request never ran")
}

func TestDeadlineTravelsWithRequest(t *testing.T) {
	type seen struct {
		deadline time.Time
		ok       bool
	}
	ctx := testCtx(t)
	deadlines := make(chan seen, 1)
	client, _ := tcpPair(t, &Config{}, &Server{Config: Config{Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		d, ok := ctx.Deadline()
		deadlines <- seen{d, ok}
		return nil, nil
	})}})

	t.Run("with a deadline", func(t *testing.T) {
		callCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		want, _ := callCtx.Deadline()
		require.NoError(t, client.Call(callCtx, "x", nil))
		got := <-deadlines
		require.True(t, got.ok, "the handler's context has a deadline")
		// The timeout is measured when the request leaves and counts from
		// its arrival, rounded up: never earlier than the caller's.
		assert.False(t, got.deadline.Before(want), "remote deadline %v is before the caller's %v", got.deadline, want)
		assert.WithinDuration(t, want, got.deadline, 5*time.Second)
	})
	t.Run("without a deadline", func(t *testing.T) {
		callCtx, cancel := context.WithCancel(context.Background())
		defer cancel()
		require.NoError(t, client.Call(callCtx, "x", nil))
		got := <-deadlines
		assert.False(t, got.ok, "no deadline travels when the caller has none")
	})
}

// When the caller's deadline passes, the caller sees context.DeadlineExceeded
// and the handler's context ends with context.DeadlineExceeded too. The
// calls run one after another, each with its own 100 ms deadline, so that a
// race between the two sides' timers shows.
const specDeadlineCalls = 10

func specExpireCalls(t *testing.T) (callerErrs, handlerErrs []error) {
	ctx := testCtx(t)
	b := newSpecBlocker(t)
	b.let()
	client, _ := pipePair(t, &Config{}, &Config{Handler: b})

	for range specDeadlineCalls {
		callCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		callerErrs = append(callerErrs, client.Call(callCtx, specMsg{Op: "wait"}, nil))
		cancel()
		handlerErrs = append(handlerErrs, specAwait(t, ctx, b.ended, "the handler's context to end"))
	}
	return callerErrs, handlerErrs
}

func TestDeadlineExpiryReturnsDeadlineExceededToCaller(t *testing.T) {
	callerErrs, _ := specExpireCalls(t)
	for i, err := range callerErrs {
		assert.ErrorIs(t, err, context.DeadlineExceeded, "call %d: the caller gives up at its deadline", i)
	}
}

func TestDeadlineExpiryEndsHandlerContextWithDeadlineExceeded(t *testing.T) {
	_, handlerErrs := specExpireCalls(t)
	for i, err := range handlerErrs {
		assert.ErrorIs(t, err, context.DeadlineExceeded,
			"handler %d: its context ends because the deadline passed, not with a cancel", i)
	}
}
