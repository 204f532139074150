package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

const versionAbout = `Print the version of this bokbok command (the module version it was
built from, or "(devel)" for a build from a source tree), the Go version
that built it, and the wire protocol it speaks: version 1, with message
headers (method names and metadata) version 1.`

func runVersion(ctx context.Context, e *env, args []string) int {
	fs := newFlags(e, "version", "version", versionAbout)
	if _, code, ok := parseArgs(fs, args); !ok {
		return code
	}
	fmt.Fprintf(e.stdout, "bokbok %s (%s, protocol 1, headers 1)\n", moduleVersion(), runtime.Version())
	return exitOK
}

// moduleVersion is the version of the module the command was built from.
func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
