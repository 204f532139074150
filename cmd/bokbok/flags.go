package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/bokbok-go/bokbok"
)

// newFlags makes a flag set for a command whose usage line is use and
// whose description is about; --help prints both and the flags.
func newFlags(e *env, name, use, about string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: bokbok %s\n\n%s\n", use, about)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 { // a command without flags gets no empty section
			fmt.Fprintf(e.stderr, "\nFlags:\n")
			printFlags(fs)
		}
	}
	return fs
}

// printFlags prints the flags of fs as PrintDefaults does, but spelled
// with two dashes, as this command's help and errors spell them.
func printFlags(fs *flag.FlagSet) {
	w := fs.Output()
	fs.VisitAll(func(f *flag.Flag) {
		kind, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if kind != "" {
			line += " " + kind
		}
		fmt.Fprintln(w, line)
		usage = strings.ReplaceAll(usage, "\n", "\n    \t")
		if !isZeroDefault(f) {
			if g, ok := f.Value.(flag.Getter); ok && isString(g.Get()) {
				usage += fmt.Sprintf(" (default %q)", f.DefValue)
			} else {
				usage += fmt.Sprintf(" (default %v)", f.DefValue)
			}
		}
		fmt.Fprintf(w, "    \t%s\n", usage)
	})
}

func isString(v any) bool { _, ok := v.(string); return ok }

// isZeroDefault reports whether a flag's default is its type's zero value,
// which the help does not show.
func isZeroDefault(f *flag.Flag) bool {
	switch f.DefValue {
	case "", "0", "false", "0s", "[]":
		return true
	}
	return false
}

// parseInterspersed parses flags that may come before, between or after
// the positional arguments, and returns the positional arguments. A lone
// "-" is a positional argument; "--" ends the flags, so that everything
// after it is positional even if it starts with "-" (a JSON message such
// as -1, say).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		// fs.Parse consumes a "--" that ends the flags; it stops without
		// consuming at a positional argument.
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" && !isFlagValue(fs, args, used-1) {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// isFlagValue reports whether args[i] is the value of the flag before it
// (as "--" is in "--realm --"), rather than an argument of its own.
func isFlagValue(fs *flag.FlagSet, args []string, i int) bool {
	if i == 0 {
		return false
	}
	prev := args[i-1]
	if !strings.HasPrefix(prev, "-") || strings.Contains(prev, "=") {
		return false
	}
	f := fs.Lookup(strings.TrimLeft(prev, "-"))
	if f == nil {
		return false
	}
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return !ok || !b.IsBoolFlag()
}

// parseArgs parses args, wants the positional arguments named in names
// (for the error; trailing names in brackets, such as "[MESSAGE]", are
// optional), and reports problems on stderr. ok is false if the
// command should exit with code: exitOK after --help (the usage has been
// printed), exitUsage after a bad flag or argument count (the problem and
// a pointer to --help have been printed).
func parseArgs(fs *flag.FlagSet, args []string, names ...string) (pos []string, code int, ok bool) {
	full := fs.Usage
	fs.Usage = func() {} // the flag package calls it after every error; print the full usage only for --help
	pos, err := parseInterspersed(fs, args)
	fs.Usage = full
	if errors.Is(err, flag.ErrHelp) {
		full()
		return nil, exitOK, false
	}
	required := len(names)
	for required > 0 && strings.HasPrefix(names[required-1], "[") {
		required--
	}
	if err == nil && (len(pos) < required || len(pos) > len(names)) {
		switch {
		case len(names) == 0:
			err = fmt.Errorf("takes no arguments, got %q", pos)
		case required == len(names):
			err = fmt.Errorf("want %d argument(s) (%s), got %d: %q", len(names), strings.Join(names, " "), len(pos), pos)
		default:
			err = fmt.Errorf("want %d to %d argument(s) (%s), got %d: %q", required, len(names), strings.Join(names, " "), len(pos), pos)
		}
		fmt.Fprintf(fs.Output(), "bokbok %s: %v\n", fs.Name(), err)
	}
	if err != nil { // the flag package has printed its own errors
		fmt.Fprintf(fs.Output(), "Run \"bokbok %s --help\" for usage.\n", fs.Name())
		return nil, exitUsage, false
	}
	return pos, exitOK, true
}

// connFlags are the flags of the commands that connect to a peer.
type connFlags struct {
	user     string
	keyFile  string
	realm    string
	insecure bool
	timeout  time.Duration
}

func (cf *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&cf.user, "user", "", "user `NAME` to authenticate as (secure mode)")
	fs.StringVar(&cf.keyFile, "key-file", "", "`FILE` holding the user's key in its text form (secure mode; make one with \"bokbok keygen\")")
	fs.StringVar(&cf.realm, "realm", "", "the server's `REALM`, as the server is configured")
	fs.BoolVar(&cf.insecure, "insecure", false, "connect without authentication or encryption (the server must be insecure too)")
	fs.DurationVar(&cf.timeout, "timeout", 10*time.Second, "how long (`D`, e.g. 500ms, 30s) to wait for the connection and each reply")
}

// config checks the flags and builds the connection's Config. Its error
// names the flag and the fix.
func (cf *connFlags) config() (*bokbok.Config, error) {
	switch {
	case len(cf.realm) > 255:
		return nil, fmt.Errorf("--realm is %d bytes long; a realm has at most 255", len(cf.realm))
	case cf.insecure && (cf.user != "" || cf.keyFile != ""):
		return nil, errors.New("--insecure cannot be combined with --user or --key-file: drop --insecure to connect securely, or drop --user and --key-file")
	case cf.insecure:
		return &bokbok.Config{Realm: cf.realm}, nil
	case cf.user == "" || cf.keyFile == "":
		return nil, errors.New("a secure connection needs --user NAME and --key-file FILE (or pass --insecure for an insecure server)")
	case len(cf.user) > 255:
		return nil, fmt.Errorf("--user is %d bytes long; a user name has at most 255", len(cf.user))
	}
	key, err := readKeyFile(cf.keyFile)
	if err != nil {
		return nil, err
	}
	return &bokbok.Config{Key: &key, User: cf.user, Realm: cf.realm}, nil
}

// readKeyFile reads a key's text form from a file (surrounding white space
// allowed).
func readKeyFile(path string) (bokbok.Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return bokbok.Key{}, fmt.Errorf("--key-file: %v", err)
	}
	k, err := bokbok.ParseKey(strings.TrimSpace(string(b)))
	if err != nil {
		return bokbok.Key{}, fmt.Errorf("--key-file %s: %v", path, err)
	}
	return k, nil
}
