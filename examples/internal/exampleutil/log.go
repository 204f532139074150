package exampleutil

import (
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
)

// SetupLog sets the standard logger up as the examples use it: each line
// starts with prefix (such as "server: ") and the time of day. With verbose,
// the library's debug records, which its Config.Logger (slog.Default() in
// the examples) sends to the same logger, are logged too.
func SetupLog(prefix string, verbose bool) {
	log.SetFlags(log.Ltime)
	log.SetPrefix(prefix)
	if verbose {
		slog.SetLogLoggerLevel(slog.LevelDebug)
	}
}

// SetUsage sets the message that -h and a bad command line print
// (flag.Usage): text, then the flags.
func SetUsage(text string) {
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), text)
		flag.PrintDefaults()
	}
}

// NoArgs ends the program with status 2, saying why, if its command line
// has arguments after the flags.
func NoArgs() {
	if flag.NArg() != 0 {
		log.Printf("error: unexpected arguments %q", flag.Args())
		os.Exit(2)
	}
}
