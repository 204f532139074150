package main

import (
	"context"
	"fmt"
	"os"
)

// A mode is the durability both systems are run with.
type mode struct {
	name  string
	fsync bool
}

var allModes = []mode{{"fsync", true}, {"no-fsync", false}}

// A system builds clusters: one server, one sender, o.listeners listeners.
type system struct {
	name  string
	start func(ctx context.Context, m mode, o *options, cs []*checker) (cluster, error)
}

var allSystems = []system{
	{"bokbok-pipes", startBokbok},
	{"jetstream", startJetStream},
}

// A cluster is a running system: a server with its data in a temporary
// directory, one sender and len(checkers) listeners, listener i feeding
// checker i. The pipeline (stream) is persistent.
type cluster interface {
	// putAll puts ids 1..n as fast as the sender can and returns when
	// every put call has returned.
	putAll(ctx context.Context, n int) error
	// putAsync starts the put of one id and returns at once (unless too
	// many are in progress); waitPuts waits for those puts to return.
	putAsync(ctx context.Context, id uint64)
	waitPuts(ctx context.Context) error
	// flush waits until the server has acknowledged, as stored, every
	// packet put so far.
	flush(ctx context.Context) error
	// stopListener takes listener i offline (its node or connection
	// closed, its position durably recorded); startListener brings it
	// back.
	stopListener(ctx context.Context, i int) error
	startListener(ctx context.Context, i int) error
	// close stops everything and removes the temporary directory.
	close() error
}

// tempDir makes a fresh directory for one cluster.
func tempDir(sys string) (string, error) {
	dir, err := os.MkdirTemp("", "bench-pipes-"+sys+"-")
	if err != nil {
		return "", fmt.Errorf("temporary directory: %w", err)
	}
	return dir, nil
}
