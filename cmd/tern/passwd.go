package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/ternmq/tern/server/auth"
)

// passwdCmd adds or replaces a user in a password file (tern serve
// --password-file). The password is read from the first line of standard
// input, so it never appears in the process list or shell history.
func passwdCmd(args []string) int {
	fs := flag.NewFlagSet("passwd", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: tern passwd [-f FILE] [--iterations N] [--delete] USERNAME

Adds USERNAME to FILE (creating it) with a PBKDF2-SHA256 hash of the password
read from the first line of standard input, replacing an existing entry; or
removes it with --delete. Then: tern serve --password-file FILE.

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
		pw, err := bufio.NewReader(os.Stdin).ReadString('\n')
		pw = strings.TrimRight(pw, "\r\n")
		if pw == "" {
			fmt.Fprintf(os.Stderr, "tern passwd: no password on standard input (%v)\n", err)
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
