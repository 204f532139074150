package ocap_test

import (
	"context"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/ocap"
)

// BenchmarkSequentialCall: one call at a time to an actor of another node
// over loopback TCP, on bokbok's own capability protocol, insecure and
// secure; the OCapN packages have benchmarks of the same name.
func BenchmarkSequentialCall(b *testing.B) {
	key, err := bokbok.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []struct {
		name string
		cli  *bokbok.Config
	}{
		{"insecure", nil},
		{"secure", &bokbok.Config{User: "bench", Key: &key}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			vat := ocap.NewVat("bench")
			defer vat.Close()
			var server, client ocap.Node
			server.Bind("echo", vat.Spawn(ocap.Methods{"echo": func(s string) string { return s }}))
			srv := &bokbok.Server{Config: bokbok.Config{Handler: &server}}
			if mode.cli != nil {
				srv.UserKey = func(string) (bokbok.Key, bool) { return key, true }
			}
			ln, err := bokbok.Listen("127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go srv.Serve(ln)
			defer srv.Shutdown(ctx)
			s, err := client.Dial(ctx, ln.Addr().String(), mode.cli)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			echo := s.Fetch("echo")
			b.ReportAllocs()
			for b.Loop() {
				if _, err := echo.Send("echo", "hello").Await(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
