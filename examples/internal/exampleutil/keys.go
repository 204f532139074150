package exampleutil

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/bokbok-go/bokbok"
)

// The -user and -realm of the secure examples, servers and clients alike,
// when not given.
const (
	DefaultUser  = "demo"
	DefaultRealm = "bokbok-example"
)

// Keys are the key flags of the secure examples: -insecure, -user, -key,
// -key-file and -realm. ServerKeyFlags and ClientKeyFlags define them,
// each with its own help text; their values are set once flag.Parse has
// run. A server uses Mode and UserKey, a client Config and Hint.
type Keys struct {
	Insecure bool   // -insecure: no keys, nothing encrypted
	User     string // -user: on a server, the one user it knows
	Realm    string // -realm: the server's realm, which clients must use too

	keyText string // -key: the user's key, in its text form
	keyFile string // -key-file: a file holding the key's text form
}

// ServerKeyFlags defines the key flags of an example server on the
// command line (flag.CommandLine).
func ServerKeyFlags() *Keys {
	return defineKeyFlags(
		"accept insecure clients only: no keys, nothing encrypted",
		"the user name clients authenticate as",
		"a file holding the user's key in its text form; without -key or -key-file, a new key is generated and printed",
		"the realm: a name for this server that clients must use too")
}

// ClientKeyFlags defines the key flags of an example client on the
// command line (flag.CommandLine).
func ClientKeyFlags() *Keys {
	return defineKeyFlags(
		"connect in insecure mode: no key, nothing encrypted",
		"the user name to authenticate as",
		"a file holding the user's key in its text form",
		"the server's realm, as the server was given it")
}

// defineKeyFlags defines the key flags with the help texts given.
func defineKeyFlags(insecure, user, keyFile, realm string) *Keys {
	k := new(Keys)
	flag.BoolVar(&k.Insecure, "insecure", false, insecure)
	flag.StringVar(&k.User, "user", DefaultUser, user)
	flag.StringVar(&k.keyText, "key", "", "the user's key, in its text form (44 characters of base64); see -key-file")
	flag.StringVar(&k.keyFile, "key-file", "", keyFile)
	flag.StringVar(&k.Realm, "realm", DefaultRealm, realm)
	return k
}

// Mode describes a server's security mode for its log: "insecure", or
// "secure" with the user and the realm.
func (k *Keys) Mode() string {
	if k.Insecure {
		return "insecure"
	}
	return fmt.Sprintf("secure: user %q, realm %q", k.User, k.Realm)
}

// UserKey returns a bokbok.Server UserKey that knows one user, -user, with
// the key given by -key or -key-file. A real server would look users up in
// its own store; UserKey returns false for an unknown user, and the client
// then gets the same error as one with a wrong key.
//
// Given neither -key nor -key-file, UserKey generates a key and logs it
// with the command that runs the example's client with it: client is the
// client's package (such as "./examples/client"), and the command has
// -addr addr if addr is not defaultAddr, the client's default.
//
// An empty or too long -user, a too long -realm, or a key it cannot read
// ends the program with status 1.
func (k *Keys) UserKey(client, addr, defaultAddr string) func(user string) (bokbok.Key, bool) {
	if k.User == "" || len(k.User) > 255 {
		log.Fatalf("-user must be 1 to 255 bytes")
	}
	if len(k.Realm) > 255 {
		log.Fatalf("-realm must be at most 255 bytes")
	}
	key, given, err := readKey(k.keyText, k.keyFile)
	if err != nil {
		log.Fatal(err)
	}
	if !given {
		if key, err = bokbok.GenerateKey(); err != nil {
			log.Fatal(err)
		}
		k.printClientCommand(key, client, addr, defaultAddr)
	}
	knownUser := k.User
	return func(user string) (bokbok.Key, bool) {
		if user != knownUser {
			return bokbok.Key{}, false
		}
		return key, true
	}
}

// printClientCommand logs a generated key and how to run the client with
// it.
func (k *Keys) printClientCommand(key bokbok.Key, client, addr, defaultAddr string) {
	text, err := key.MarshalText()
	if err != nil {
		log.Fatal(err)
	}
	args := []string{"go", "run", client}
	if addr != defaultAddr {
		args = append(args, "-addr", shellQuote(addr))
	}
	args = append(args, "-user", shellQuote(k.User))
	if k.Realm != DefaultRealm {
		args = append(args, "-realm", shellQuote(k.Realm))
	}
	args = append(args, "-key", string(text))
	log.Printf("no -key or -key-file given: generated a key for user %q:", k.User)
	log.Printf("    %s", text)
	log.Printf("run the client with it:")
	log.Printf("    %s", strings.Join(args, " "))
	log.Printf("(or save the key in a file, and give -key-file FILE to both)")
}

// shellQuote quotes s for a POSIX shell if it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@+=,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Config returns a bokbok.Config for a client's connection with its Key,
// User and Realm set from the flags, or, with -insecure, none of them: an
// insecure connection.
//
// In secure mode without -key or -key-file, or with a key it cannot read,
// Config logs the error and ends the program with status 2. server is the
// example that prints a key when it starts without one, for that error
// (such as "examples/server").
func (k *Keys) Config(server string) *bokbok.Config {
	cfg := new(bokbok.Config)
	if k.Insecure {
		return cfg
	}
	key, given, err := readKey(k.keyText, k.keyFile)
	if err == nil && !given {
		err = fmt.Errorf("no key: give -key KEY or -key-file FILE (%s prints a key when it starts without one), or -insecure for an insecure server", server)
	}
	if err != nil {
		log.Printf("error: %v", err)
		os.Exit(2)
	}
	cfg.Key, cfg.User, cfg.Realm = &key, k.User, k.Realm
	return cfg
}

// Hint returns what to check when err, from dialling the server, is an
// authentication failure (bokbok.ErrAuth: a wrong key, an unknown user or
// another realm) or a security mode mismatch (bokbok.ErrMode), or "" for
// any other error.
func (k *Keys) Hint(err error) string {
	switch {
	case errors.Is(err, bokbok.ErrAuth):
		return "check -user, -key or -key-file, and -realm"
	case errors.Is(err, bokbok.ErrMode) && k.Insecure:
		return "the server is secure: give -key or -key-file instead of -insecure"
	case errors.Is(err, bokbok.ErrMode):
		return "the server is insecure: use -insecure (and no key)"
	}
	return ""
}

// readKey returns the key given by -key (text) or -key-file (file), and
// whether one was given at all.
func readKey(text, file string) (key bokbok.Key, given bool, err error) {
	switch {
	case text != "" && file != "":
		return key, true, errors.New("give -key or -key-file, not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return key, true, fmt.Errorf("reading the key: %w", err)
		}
		// A key file is the key's text form, perhaps with a newline.
		key, err = bokbok.ParseKey(strings.TrimSpace(string(b)))
		if err != nil {
			return key, true, fmt.Errorf("%s: %w", file, err)
		}
		return key, true, nil
	case text != "":
		key, err = bokbok.ParseKey(text)
		return key, true, err
	}
	return key, false, nil
}
