// Command tern is the Tern MQTT broker, its benchmark harness and its tools.
//
//	tern serve   run the broker
//	tern bench   measure any MQTT broker
//	tern ctl     manage a running broker over its admin API
//	tern version print the version, commit, build date and Go version
package main

import (
	"fmt"
	"os"
)

const usage = `tern — an MQTT 3.1/3.1.1/5.0 broker for fleets of devices on one machine.

Usage:
  tern <command> [flags]

Commands:
  serve     run the broker (tern serve --help for its flags)
  bench     measure an MQTT broker (tern bench --help)
  store     inspect a broker's data directory (tern store inspect --help)
  passwd    add a user to a password file (tern passwd --help)
  pub       publish a message, like mosquitto_pub (tern pub --help)
  sub       print messages, like mosquitto_sub (tern sub --help)
  ctl       manage a running broker over its admin API (tern ctl --help)
  version   print the version, commit, build date and Go version

Run "tern <command> --help" for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	switch cmd {
	case "serve":
		os.Exit(serveCmd(args))
	case "bench":
		os.Exit(benchCmd(args))
	case "store":
		os.Exit(storeCmd(args))
	case "passwd":
		os.Exit(passwdCmd(args))
	case "pub":
		os.Exit(pubCmd(args))
	case "sub":
		os.Exit(subCmd(args))
	case "ctl":
		os.Exit(ctlCmd(args))
	case "version", "--version", "-v":
		printVersion(os.Stdout)
	case "help", "--help", "-h":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "tern: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
}
