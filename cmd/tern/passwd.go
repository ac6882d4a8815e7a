package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/ternmq/tern/server/auth"
)

// passwdCmd adds or replaces a user in a password file (tern serve
// --password-file). On a terminal the password is prompted for twice,
// without echo; otherwise it is the first line of standard input. Either
// way it never appears in the process list or shell history.
func passwdCmd(args []string) int {
	fs := flag.NewFlagSet("passwd", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: tern passwd [-f FILE] [--iterations N] [--delete] USERNAME

Adds USERNAME to FILE (creating it) with a PBKDF2-SHA256 hash of the password,
replacing an existing entry; or removes it with --delete. On a terminal the
password is asked for twice without echo; otherwise it is read from the first
line of standard input. Then: tern serve --password-file FILE. The file may
also hold mosquitto_passwd lines ($7$, $6$).

  tern passwd -f passwords dev1                       (prompts)
  printf '%%s\n' 's3cret' | tern passwd -f passwords dev1

Flags:
`)
		fs.PrintDefaults()
	}
	file := fs.String("f", "passwords", "password `FILE`")
	iter := fs.Int("iterations", auth.DefaultPasswordIterations, "PBKDF2 iterations")
	del := fs.Bool("delete", false, "remove the user")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	user := fs.Arg(0)
	var newLine string
	if !*del {
		pw, err := readPassword(os.Stdin, os.Stderr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "tern passwd: %v\n", err)
			return 1
		}
		if newLine, err = auth.HashPassword(user, pw, *iter); err != nil {
			fmt.Fprintf(os.Stderr, "tern passwd: %v\n", err)
			return 1
		}
	}
	var kept []string
	if raw, err := os.ReadFile(*file); err == nil {
		for _, l := range strings.Split(strings.TrimRight(string(raw), "\n"), "\n") {
			if u, _, _ := strings.Cut(l, ":"); u == user || l == "" {
				continue
			}
			kept = append(kept, l)
		}
	} else if !os.IsNotExist(err) {
		fmt.Fprintf(os.Stderr, "tern passwd: %v\n", err)
		return 1
	}
	if newLine != "" {
		kept = append(kept, newLine)
	}
	out := strings.Join(kept, "\n")
	if out != "" {
		out += "\n"
	}
	if err := os.WriteFile(*file, []byte(out), 0o600); err != nil {
		fmt.Fprintf(os.Stderr, "tern passwd: %v\n", err)
		return 1
	}
	return 0
}

// readPassword reads the new password: prompted for twice without echo
// when in is a terminal, else the first line of in.
func readPassword(in *os.File, prompt io.Writer) (string, error) {
	fd := int(in.Fd())
	if !term.IsTerminal(fd) {
		pw, err := bufio.NewReader(in).ReadString('\n')
		pw = strings.TrimRight(pw, "\r\n")
		if pw == "" {
			if err == nil || errors.Is(err, io.EOF) {
				err = errors.New("empty")
			}
			return "", fmt.Errorf("no password on standard input (%v)", err)
		}
		return pw, nil
	}
	ask := func(p string) (string, error) {
		fmt.Fprint(prompt, p)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(prompt)
		return string(b), err
	}
	pw, err := ask("Password: ")
	if err != nil {
		return "", err
	}
	if pw == "" {
		return "", errors.New("empty password")
	}
	again, err := ask("Password again: ")
	if err != nil {
		return "", err
	}
	if again != pw {
		return "", errors.New("the passwords differ")
	}
	return pw, nil
}
