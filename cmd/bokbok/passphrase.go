package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/bokbok-go/bokbok"
	"golang.org/x/term"
)

const passphraseAbout = `Derive a key from a passphrase (argon2id, salted with the realm and the
user name) and print it in its text form on standard output, exactly as
bokbok.PassphraseToKey(passphrase, realm, user) makes it. The same
passphrase, realm and user always give the same key, so a person can
re-create their key where they cannot carry a file.

On a terminal the passphrase is read twice, without echo. Otherwise the
first line of standard input is the passphrase (the line ending is
removed; other white space is kept):

  bokbok passphrase --realm prod --user alice > alice.key
  printf '%s\n' "$PASS" | bokbok passphrase --realm prod --user alice

A generated key ("bokbok keygen") is stronger: anyone who records a
handshake can test passphrase guesses offline, so a passphrase must be long
and unguessable. The realm and user must be the ones the client will use
(--realm, --user): they are part of the derivation.`

// minPassphraseRunes is the length below which passphrase warns that the
// passphrase is short.
const minPassphraseRunes = 16

func runPassphrase(ctx context.Context, e *env, args []string) int {
	fs := newFlags(e, "passphrase", "passphrase --user NAME [--realm REALM]", passphraseAbout)
	user := fs.String("user", "", "the user `NAME` the key is for (required; the client's --user)")
	realm := fs.String("realm", "", "the server's `REALM` (the client's and the server's --realm)")
	if _, code, ok := parseArgs(fs, args); !ok {
		return code
	}
	switch {
	case *user == "":
		fmt.Fprintln(e.stderr, "bokbok passphrase: --user is required: the key is derived for one user (pass --user NAME, the name the client will use)")
		return exitUsage
	case len(*user) > 255:
		fmt.Fprintf(e.stderr, "bokbok passphrase: --user is %d bytes long; a user name has at most 255\n", len(*user))
		return exitUsage
	case len(*realm) > 255:
		fmt.Fprintf(e.stderr, "bokbok passphrase: --realm is %d bytes long; a realm has at most 255\n", len(*realm))
		return exitUsage
	}

	pass, err := readPassphrase(ctx, e, *user, *realm)
	if err != nil {
		fmt.Fprintf(e.stderr, "bokbok passphrase: %v\n", err)
		return exitUsage
	}
	fmt.Fprintln(e.stderr, "bokbok passphrase: warning: a generated key (bokbok keygen) is stronger than a passphrase: anyone who records a handshake can guess passphrases offline.")
	if n := utf8.RuneCountInString(pass); n < minPassphraseRunes {
		fmt.Fprintf(e.stderr, "bokbok passphrase: warning: this passphrase is only %d characters long; use %d or more, or several random words.\n", n, minPassphraseRunes)
	}
	k := bokbok.PassphraseToKey(pass, *realm, *user)
	text, _ := k.MarshalText()
	fmt.Fprintf(e.stdout, "%s\n", text)
	return exitOK
}

// readPassphrase reads the passphrase: twice without echo from a terminal,
// else the first line of e.stdin. An empty one is an error. It gives up
// when ctx ends (on SIGINT: main catches it, so a blocked read would
// otherwise never end).
func readPassphrase(ctx context.Context, e *env, user, realm string) (string, error) {
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return readPassphraseTerminal(ctx, e, int(f.Fd()), user, realm)
	}
	var line string
	err := interruptible(ctx, func() (err error) {
		line, err = bufio.NewReader(e.stdin).ReadString('\n')
		return err
	})
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading the passphrase from standard input: %v", err)
	}
	line = strings.TrimSuffix(line, "\n")
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return "", errors.New("empty passphrase refused: write the passphrase as the first line of standard input (or run on a terminal to be asked for it)")
	}
	return line, nil
}

func readPassphraseTerminal(ctx context.Context, e *env, fd int, user, realm string) (string, error) {
	ask := func(prompt string) (string, error) {
		state, err := term.GetState(fd)
		if err != nil {
			return "", fmt.Errorf("reading the passphrase: %v", err)
		}
		fmt.Fprint(e.stderr, prompt)
		var b []byte
		err = interruptible(ctx, func() (err error) {
			b, err = term.ReadPassword(fd)
			return err
		})
		if ctx.Err() != nil {
			term.Restore(fd, state) // ReadPassword is still blocked and has echo off
		}
		fmt.Fprintln(e.stderr)
		if err != nil {
			return "", fmt.Errorf("reading the passphrase: %v", err)
		}
		return string(b), nil
	}
	first, err := ask(fmt.Sprintf("Passphrase for user %q in realm %q: ", user, realm))
	if err != nil {
		return "", err
	}
	if first == "" {
		return "", errors.New("empty passphrase refused")
	}
	second, err := ask("Same passphrase again: ")
	if err != nil {
		return "", err
	}
	if first != second {
		return "", errors.New("the two passphrases differ; nothing derived (run it again)")
	}
	return first, nil
}

// interruptible runs read, which may block on a terminal or a pipe, and
// returns its error, or ctx's error as soon as ctx ends (read then goes on
// in the background until the process exits).
func interruptible(ctx context.Context, read func() error) error {
	done := make(chan error, 1)
	go func() { done <- read() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return errors.New("interrupted")
	}
}
