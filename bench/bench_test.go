package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
)

// TestQuick runs the quick mode for every system and scenario: every
// system must echo correctly and measure something in every scenario.
func TestQuick(t *testing.T) {
	var progress strings.Builder
	cfg, err := parseFlags([]string{"-quick"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	res := runAll(cfg, &progress)
	t.Log("\n" + progress.String())
	for _, e := range res.errs {
		t.Error(e)
	}
	for _, sys := range cfg.systems {
		for _, sc := range cfg.scenarios {
			for _, col := range columns {
				if !strings.HasPrefix(col, "("+sc.id+")") {
					continue
				}
				if v, ok := res.median(sys.name(), col); !ok || v <= 0 && col != colMem {
					t.Errorf("%s %s: no figure (got %v, %v)", sys.name(), col, v, ok)
				}
			}
		}
	}
}

func TestPickRejectsUnknownNames(t *testing.T) {
	if _, err := parseFlags([]string{"-systems", "raw,nope"}, io.Discard); err == nil {
		t.Error("-systems raw,nope: no error")
	}
	if _, err := parseFlags([]string{"-scenarios", "a,z"}, io.Discard); err == nil {
		t.Error("-scenarios a,z: no error")
	}
	cfg, err := parseFlags([]string{"-systems", "bokbok,raw", "-scenarios", "e,a"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.systems) != 2 || cfg.systems[0].name() != "raw" || len(cfg.scenarios) != 2 || cfg.scenarios[0].id != "a" {
		t.Errorf("picked %d systems, %d scenarios, not raw,bokbok and a,e in table order", len(cfg.systems), len(cfg.scenarios))
	}
}

// corrupting wraps a system so that its clients flip one byte of every
// reply's Data.
type corrupting struct{ system }

type corruptingClient struct{ client }

func (s corrupting) dial(ctx context.Context, addr string) (client, error) {
	c, err := s.system.dial(ctx, addr)
	return corruptingClient{c}, err
}

func (c corruptingClient) call(ctx context.Context, req *Msg) (*Msg, error) {
	resp, err := c.client.call(ctx, req)
	if err == nil && len(resp.Data) > 0 {
		resp.Data[len(resp.Data)-1] ^= 1
	}
	return resp, err
}

// TestMismatchIsCaught checks that a wrong echo fails the scenario.
func TestMismatchIsCaught(t *testing.T) {
	o := options{duration: 50 * time.Millisecond, warmup: 10 * time.Millisecond, idle: 5, grace: 5 * time.Second}
	for _, sc := range allScenarios {
		if _, err := runScenario(sc, corrupting{rawSystem{}}, o); !errors.Is(err, errMismatch) {
			t.Errorf("(%s) with corrupted replies: got %v, want an echo mismatch", sc.id, err)
		}
	}
}

// TestMuxSystemsRoute checks that the bokbok-mux systems serve the echo
// only under its method name, so their figures measure the routed path:
// a call without a method, or with another, gets ErrNoMethod.
func TestMuxSystemsRoute(t *testing.T) {
	all, err := allSystems()
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, sys := range all {
		s, ok := sys.(*bokbokMuxSystem)
		if !ok {
			continue
		}
		found++
		t.Run(s.name(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			addr, stop, err := s.start()
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			c, err := s.dial(ctx, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.close()
			if err := newCaller(c, 1, smallSize).echo(ctx); err != nil {
				t.Fatal(err)
			}
			conn := c.(bokbokMuxClient).c
			req := &Msg{Seq: 7, Data: []byte("x")}
			if err := conn.Call(ctx, req, new(Msg)); !errors.Is(err, bokbok.ErrNoMethod) {
				t.Errorf("Call without a method: got %v, want ErrNoMethod", err)
			}
			if _, err := bokbok.Invoke[Msg](ctx, conn, "nope", req); !errors.Is(err, bokbok.ErrNoMethod) {
				t.Errorf("Invoke of \"nope\": got %v, want ErrNoMethod", err)
			}
		})
	}
	if found != 3 {
		t.Errorf("found %d bokbok-mux systems, want 3", found)
	}
}
