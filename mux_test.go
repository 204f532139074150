package bokbok

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// muxPair opens a pair of connections over net.Pipe whose second end is
// served by mux; it returns the first end, which calls it.
func muxPair(t testing.TB, mux *Mux) *Conn {
	t.Helper()
	client, _ := pipePair(t, nil, &Config{Handler: mux})
	return client
}

// muxReply is a handler that replies with name, and the method it saw.
func muxReply(name string) HandlerFunc {
	return func(ctx context.Context, req *Request) (any, error) {
		return name + ":" + req.Method(), nil
	}
}

func TestMuxRoutesByMethod(t *testing.T) {
	mux := NewMux()
	mux.Handle("a", muxReply("A"))
	mux.Handle("b.long.name", muxReply("B"))
	mux.HandleFunc("c", func(ctx context.Context, req *Request) (any, error) {
		var n int
		if err := req.Decode(&n); err != nil {
			return nil, err
		}
		return n * 2, nil
	})
	mux.Handle("", muxReply("none"))
	client := muxPair(t, mux)
	ctx := testCtx(t)

	for _, tc := range []struct {
		method string
		msg    any
		want   any
	}{
		{"a", 1, "A:a"},
		{"b.long.name", 1, "B:b.long.name"},
		{"c", 21, int64(42)},
		{"", 1, "none:"},
		{"a", 2, "A:a"}, // again, after others
	} {
		t.Run(fmt.Sprintf("%q", tc.method), func(t *testing.T) {
			var got any
			require.NoError(t, client.Invoke(ctx, tc.method, tc.msg, &got))
			assert.Equal(t, tc.want, got)
		})
	}

	// Call and Request send no method: the "" route serves them.
	var got string
	require.NoError(t, client.Call(ctx, 1, &got))
	assert.Equal(t, "none:", got)
	assert.Equal(t, []string{"", "a", "b.long.name", "c"}, mux.Methods())
}

func TestMuxUnknownMethod(t *testing.T) {
	for _, tc := range []struct {
		name   string
		routes []string
		method string
	}{
		{"zero Mux, named method", nil, "nope"},
		{"zero Mux, no method", nil, ""},
		{"other methods only", []string{"a", "b"}, "c"},
		{"no \"\" route", []string{"a"}, ""},
		{"prefix of a method", []string{"kv.get"}, "kv"},
		{"case differs", []string{"kv.get"}, "KV.GET"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mux Mux // the zero value is ready to use
			for _, m := range tc.routes {
				mux.Handle(m, muxReply(m))
			}
			client := muxPair(t, &mux)
			err := client.Invoke(testCtx(t), tc.method, 1, nil)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrNoMethod)
			assert.NotErrorIs(t, err, ErrBadRequest)
			var re *RemoteError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, CodeNoMethod, re.Code)
			assert.Equal(t, fmt.Sprintf("no method %q", tc.method), re.Message)
		})
	}
}

func TestMuxNotificationsRoutedByMethodInOrder(t *testing.T) {
	var (
		mu  sync.Mutex
		got []string
	)
	done := make(chan struct{})
	record := func(ctx context.Context, req *Request) (any, error) {
		var n int
		if err := req.Decode(&n); err != nil {
			return nil, err
		}
		mu.Lock()
		got = append(got, fmt.Sprintf("%s%d", req.Method(), n))
		mu.Unlock()
		return nil, nil
	}
	mux := NewMux()
	mux.HandleFunc("x", record)
	mux.HandleFunc("y", record)
	mux.HandleFunc("", record)
	mux.HandleFunc("end", func(ctx context.Context, req *Request) (any, error) {
		if !req.IsNotification() {
			return nil, errors.New("want a notification")
		}
		close(done)
		return nil, nil
	})
	client := muxPair(t, mux)
	ctx := testCtx(t)

	var want []string
	for i := range 50 {
		method := []string{"x", "y", "", "unknown"}[i%4]
		require.NoError(t, client.NotifyMethod(ctx, method, i))
		if method != "unknown" { // logged and dropped; later ones still arrive
			want = append(want, fmt.Sprintf("%s%d", method, i))
		}
	}
	require.NoError(t, client.NotifyMethod(ctx, "end", 0))
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("the last notification never arrived")
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, want, got)
}

func TestMuxRegistrationPanics(t *testing.T) {
	h := muxReply("h")
	for _, tc := range []struct {
		name     string
		register func(m *Mux)
		want     string
	}{
		{"nil handler", func(m *Mux) { m.Handle("a", nil) }, `bokbok: Mux.Handle: nil handler for method "a"`},
		{"nil HandlerFunc", func(m *Mux) { m.HandleFunc("a", nil) }, `bokbok: Mux.HandleFunc: nil handler for method "a"`},
		{"twice", func(m *Mux) { m.Handle("a", h); m.Handle("a", h) }, `bokbok: Mux.Handle: method "a" registered twice`},
		{"\"\" twice", func(m *Mux) { m.Handle("", h); m.HandleFunc("", h) }, `bokbok: Mux.Handle: method "" registered twice`},
		{"typed after plain", func(m *Mux) {
			m.Handle("a", h)
			Handle(m, "a", func(ctx context.Context, req int) (int, error) { return req, nil })
		}, `bokbok: Mux.Handle: method "a" registered twice`},
		{"typed nil", func(m *Mux) { Handle[int, int](m, "a", nil) }, `bokbok: Handle: nil handler for method "a"`},
		{"notification nil", func(m *Mux) { HandleNotification[int](m, "a", nil) }, `bokbok: HandleNotification: nil handler for method "a"`},
		{"notification twice", func(m *Mux) {
			f := func(ctx context.Context, req int) error { return nil }
			HandleNotification(m, "a", f)
			HandleNotification(m, "a", f)
		}, `bokbok: Mux.Handle: method "a" registered twice`},
		{"Method twice", func(m *Mux) {
			get := Method[int, int]("get")
			f := func(ctx context.Context, req int) (int, error) { return req, nil }
			get.Handle(m, f)
			get.Handle(m, f)
		}, `bokbok: Mux.Handle: method "get" registered twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m Mux
			assert.PanicsWithValue(t, tc.want, func() { tc.register(&m) })
		})
	}

	// A registration that panicked leaves the Mux as it was.
	var m Mux
	m.Handle("a", h)
	assert.Panics(t, func() { m.Handle("a", h) })
	assert.Panics(t, func() { m.Handle("b", nil) })
	assert.Equal(t, []string{"a"}, m.Methods())
}

func TestMuxMethods(t *testing.T) {
	var m Mux
	assert.Empty(t, m.Methods())
	for _, name := range []string{"z", "a", "", "m.b", "m.a"} {
		m.Handle(name, muxReply(name))
	}
	got := m.Methods()
	assert.Equal(t, []string{"", "a", "m.a", "m.b", "z"}, got)
	got[0] = "changed" // the caller's own copy
	assert.Equal(t, []string{"", "a", "m.a", "m.b", "z"}, m.Methods())
}

// TestMuxHandleWhileServing registers methods while requests are being
// routed (run with -race): each new method is served as soon as Handle
// returns, and the methods registered before keep being served.
func TestMuxHandleWhileServing(t *testing.T) {
	mux := NewMux()
	mux.Handle("base", muxReply("base"))
	client := muxPair(t, mux)
	ctx := testCtx(t)

	const n = 50
	registered := make(chan string, n)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 { // callers of the method that was there from the start
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				var got string
				if err := client.Invoke(ctx, "base", 1, &got); err != nil || got != "base:base" {
					errs <- fmt.Errorf("base: %q, %v", got, err)
					return
				}
			}
		})
	}
	wg.Go(func() { // the registrar
		defer close(registered)
		for i := range n {
			name := fmt.Sprintf("m%d", i)
			mux.Handle(name, muxReply(name))
			registered <- name
		}
	})
	for name := range registered {
		var got string
		require.NoError(t, client.Invoke(ctx, name, 1, &got))
		require.Equal(t, name+":"+name, got)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	assert.Len(t, mux.Methods(), n+1)
}

// muxBenchRoutes fills a Mux with methods named like a service's.
func muxBenchRoutes() (*Mux, *Request) {
	mux := NewMux()
	h := HandlerFunc(func(ctx context.Context, req *Request) (any, error) { return nil, nil })
	for i := range 32 {
		mux.Handle(fmt.Sprintf("svc.method%d", i), h)
	}
	return mux, &Request{method: "svc.method17"}
}

func TestMuxRouteAllocatesNothing(t *testing.T) {
	mux, req := muxBenchRoutes()
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := mux.ServeBokbok(ctx, req); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs)
}

// BenchmarkMuxRoute measures routing a request to its handler (0
// allocs/op).
func BenchmarkMuxRoute(b *testing.B) {
	mux, req := muxBenchRoutes()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := mux.ServeBokbok(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMuxRouteParallel routes from many goroutines at once: the read
// path takes no lock.
func BenchmarkMuxRouteParallel(b *testing.B) {
	mux, _ := muxBenchRoutes()
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := &Request{method: "svc.method17"}
		for pb.Next() {
			if _, err := mux.ServeBokbok(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
