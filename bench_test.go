package bokbok

import (
	"context"
	"net"
	"testing"
)

// echoHandler replies with the request's message, undecoded.
var echoHandler = HandlerFunc(func(ctx context.Context, r *Request) (any, error) {
	var v []byte
	if err := r.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
})

// benchPair opens a connection over loopback TCP to a Server echoing back,
// in secure mode if secure is set.
func benchPair(b *testing.B, secure bool) *Conn {
	if !secure {
		c, _ := tcpPair(b, nil, &Server{Config: Config{Handler: echoHandler}})
		return c
	}
	key, err := GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	srv := &Server{Config: Config{Handler: echoHandler, Realm: "bench"}, UserKey: func(string) (Key, bool) { return key, true }}
	c, _ := tcpPair(b, &Config{Key: &key, User: "bench", Realm: "bench"}, srv)
	return c
}

func benchmarkRequest(b *testing.B, size int, parallel, secure bool) {
	c := benchPair(b, secure)
	ctx := context.Background()
	msg := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	call := func() {
		var out []byte
		if err := c.Call(ctx, msg, &out); err != nil {
			b.Fatal(err)
		}
		if len(out) != size {
			b.Fatalf("echo of %d bytes came back as %d", size, len(out))
		}
	}
	if !parallel {
		for b.Loop() {
			call()
		}
		return
	}
	// Small calls: 32 × GOMAXPROCS goroutines share the one connection.
	// Large ones: 2 × GOMAXPROCS, as many as the receive budget's 64 MiB
	// holds with every request and reply in flight at once.
	if size <= 64<<10 {
		b.SetParallelism(32)
	} else {
		b.SetParallelism(2)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			call()
		}
	})
}

// One caller, 64-byte messages, over TCP.
func BenchmarkRequestSequential(b *testing.B)       { benchmarkRequest(b, 64, false, false) }
func BenchmarkSecureRequestSequential(b *testing.B) { benchmarkRequest(b, 64, false, true) }

// Many callers sharing one connection, 64-byte messages.
func BenchmarkRequestParallel(b *testing.B)       { benchmarkRequest(b, 64, true, false) }
func BenchmarkSecureRequestParallel(b *testing.B) { benchmarkRequest(b, 64, true, true) }

// Many callers, 1 MiB messages both ways.
func BenchmarkRequestParallel1MiB(b *testing.B)       { benchmarkRequest(b, 1<<20, true, false) }
func BenchmarkSecureRequestParallel1MiB(b *testing.B) { benchmarkRequest(b, 1<<20, true, true) }

// BenchmarkNotify: one sender, 64-byte notifications.
func BenchmarkNotify(b *testing.B) {
	done := make(chan struct{}, 1)
	var n int
	c, _ := tcpPair(b, nil, &Server{Config: Config{Handler: HandlerFunc(func(ctx context.Context, r *Request) (any, error) {
		n++
		if n == b.N {
			done <- struct{}{}
		}
		return nil, nil
	})}})
	ctx := context.Background()
	msg := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := c.Notify(ctx, msg); err != nil {
			b.Fatal(err)
		}
	}
	<-done
}

// BenchmarkServerMessage1 is the server's work on a handshake's message 1:
// one Noise trial (what a single key would cost) against the trials of
// every candidate key that each handshake makes.
func BenchmarkServerMessage1(b *testing.B) {
	secret, key := Key{7}, Key{1}
	prologue := securePrologue("bench", "alice")
	cli, _ := newNoiseState(prologue, nil)
	msg := cli.writeMessage1(&key, handshakePayload)
	start, _ := newNoiseState(prologue, nil) // the ephemeral key pair, made once: not measured
	b.Run("one_trial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ns := *start
			if _, err := ns.readMessage1(&key, msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("candidates", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			keys, real := candidateKeys(&secret, "alice", []Key{key})
			ns := *start
			if _, err := ns.readMessage1Candidates(&keys, real, msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSecureDial is a whole secure opening over loopback TCP, both
// ends.
func BenchmarkSecureDial(b *testing.B) {
	key := Key{1}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &Server{Config: Config{Handler: echoHandler}, UserKeys: func(string) []Key { return []Key{key} }}
	go srv.Serve(ln)
	defer srv.Wait()
	defer srv.Close()
	cfg := &Config{User: "alice", Key: &key}
	b.ReportAllocs()
	for b.Loop() {
		c, err := Dial(context.Background(), ln.Addr().String(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
