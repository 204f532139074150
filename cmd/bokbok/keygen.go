package main

import (
	"context"
	"fmt"

	"github.com/bokbok-go/bokbok"
)

const keygenAbout = `Print a new random key (32 bytes from the system's secure random source)
in its text form, 44 characters of base64, on one line of standard output.

Give the same key to both sides: the client reads it with --key-file FILE,
and "bokbok serve --keys FILE" (or a Server's UserKey) holds it next to the
user's name. For example:

  (umask 077; bokbok keygen > alice.key)
  printf 'alice %s\n' "$(cat alice.key)" >> server-keys.txt

Anyone who has the key can authenticate as its user: keep the files private.
A generated key is stronger than one derived from a passphrase ("bokbok
passphrase"): it cannot be guessed.`

func runKeygen(ctx context.Context, e *env, args []string) int {
	fs := newFlags(e, "keygen", "keygen", keygenAbout)
	if _, code, ok := parseArgs(fs, args); !ok {
		return code
	}
	k, err := bokbok.GenerateKey()
	if err != nil {
		fmt.Fprintf(e.stderr, "bokbok keygen: %v\n", err)
		return 1 // the system's random source failed (crypto/rand does not, in practice)
	}
	text, _ := k.MarshalText()
	fmt.Fprintf(e.stdout, "%s\n", text)
	return exitOK
}
