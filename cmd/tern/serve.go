package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"syscall"

	"go.yaml.in/yaml/v3"

	"github.com/ternmq/tern/cluster"
	"github.com/ternmq/tern/server"
	"github.com/ternmq/tern/server/auth"
)

// How tern serve is configured: defaults (server.Default… constants), then
// the --config file, then flags. The file decodes straight into
// server.Options (its yaml tags are the file's keys), embedded in
// fileConfig next to the few keys that name files and logging, which the
// broker library takes as Go values (an Authenticator, an Authorizer, a
// *slog.Logger) and tern serve builds here. Flags are bound to the fields
// of that same struct and parsed after the file is loaded, so a flag
// overrides the file without a hand-written copy that could drift.

// Defaults of the keys only tern serve reads.
const (
	defaultLogLevel  = "info"
	defaultLogFormat = "text"
)

// fileConfig is the configuration file (see tern.example.yaml). Every key
// is optional. Unknown keys are an error, so a misspelt option fails
// loudly instead of silently keeping its default.
type fileConfig struct {
	server.Options `yaml:",inline"`

	// LogLevel is debug, info, warn or error. Default: info.
	LogLevel string `yaml:"log_level"`
	// LogFormat is text or json. Default: text.
	LogFormat string `yaml:"log_format"`
	// EnhancedAuth lists the 5.0 enhanced authentication methods to offer
	// (Options.EnhancedAuth): "SCRAM-SHA-256", whose users and credentials
	// are the password file's (its PBKDF2-SHA256 hashes are SCRAM's salted
	// passwords), so it needs password_file. Default: none.
	EnhancedAuth []string `yaml:"enhanced_auth"`
}

// ensureDefaults fills every default, the broker's and tern serve's.
func (c *fileConfig) ensureDefaults() {
	if c.LogLevel == "" {
		c.LogLevel = defaultLogLevel
	}
	if c.LogFormat == "" {
		c.LogFormat = defaultLogFormat
	}
	c.Options.EnsureDefaults()
}

// loadConfigFile decodes path into c, rejecting unknown keys. Durations
// may be written in days (durations.go).
func loadConfigFile(path string, c *fileConfig) error {
	src, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if src, err = expandDurations(src, reflect.TypeOf(c)); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) { // EOF: an empty file
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// serveFlags are the flags that do not map one-to-one onto a field.
type serveFlags struct {
	configPath      string
	printConfig     bool
	tlsListen       listFlag
	tlsCert, tlsKey string
	// mutual TLS of the --tls-listen listeners (TLSListener fields)
	tlsClientCA, tlsClientAuth, tlsIdentityFrom, tlsMinVersion string
	wsListen                                                   listFlag
	fs                                                         *flag.FlagSet
}

// newServeFlags binds the flags to c's fields; each flag's default is the
// field's current value.
func newServeFlags(c *fileConfig, out io.Writer) *serveFlags {
	sf := &serveFlags{fs: flag.NewFlagSet("serve", flag.ContinueOnError)}
	fs := sf.fs
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: tern serve [flags]

Runs the broker until SIGINT or SIGTERM; SIGHUP reloads the password file,
the ACL file, TLS certificates and the log level. Settings come from the defaults, then
the --config file (every key: tern.example.yaml), then flags.

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&sf.configPath, "config", "", "YAML configuration `FILE` (see tern.example.yaml)")
	fs.BoolVar(&sf.printConfig, "print-config", false, "print the effective configuration as YAML (defaults, file and flags applied) and exit")
	fs.Var(&replaceList{p: &c.Listeners}, "listen", "`HOST:PORT` to accept MQTT on; repeat for several (replaces the file's listeners)")
	fs.Var(&sf.tlsListen, "tls-listen", "`HOST:PORT` to accept MQTT over TLS on (needs --tls-cert and --tls-key); repeatable; replaces the file's tls_listeners")
	fs.StringVar(&sf.tlsCert, "tls-cert", "", "PEM certificate chain `FILE` for --tls-listen")
	fs.StringVar(&sf.tlsKey, "tls-key", "", "PEM private key `FILE` for --tls-listen")
	fs.StringVar(&sf.tlsClientCA, "tls-client-ca", "", "PEM `FILE` of the CAs client certificates of --tls-listen must chain to (mutual TLS)")
	fs.StringVar(&sf.tlsClientAuth, "tls-client-auth", "", "client certificates on --tls-listen: none (default), request (verified when given) or require")
	fs.StringVar(&sf.tlsIdentityFrom, "tls-identity-from", "", "use the client certificate's cn, subject, san_dns, san_email or san_uri as the username on --tls-listen (default: none)")
	fs.StringVar(&sf.tlsMinVersion, "tls-min-version", "", "oldest TLS version on --tls-listen: 1.2 (default) or 1.3")
	fs.Var(&sf.wsListen, "ws-listen", "`HOST:PORT` to accept MQTT over WebSocket on (path /mqtt); repeatable; replaces the file's websocket_listeners")
	fs.StringVar(&c.TLSEngine, "tls-engine", c.TLSEngine, "what serves TLS listeners: stdnet (goroutines per connection) or loops (the event loops)")
	fs.StringVar(&c.WebSocketEngine, "websocket-engine", c.WebSocketEngine, "what serves WebSocket listeners: loops (the event loops) or stdnet (goroutines per connection)")
	fs.StringVar(&c.DataDir, "data", c.DataDir, "`DIR` for durable state")
	fs.Var(stringValue[server.Durability]{&c.Durability}, "durability", "`MODE`: sync (acknowledge only what is fsynced), periodic (fsync every --sync-interval; a crash may lose that much acknowledged data), none (memory only)")
	fs.DurationVar(&c.SyncInterval, "sync-interval", c.SyncInterval, "fsync period for --durability periodic")
	fs.IntVar(&c.MaxInFlightGroups, "max-inflight-groups", c.MaxInFlightGroups, "group commits awaiting their fsync at once with --durability sync, 1-1024 (1: each group waits for the previous fsync)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn, error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: text or json")
	fs.BoolVar(&c.AllowAnonymous, "allow-anonymous", c.AllowAnonymous, "accept clients without credentials on non-loopback listeners too")
	fs.StringVar(&c.PasswordFile, "password-file", c.PasswordFile, "`FILE` of users and hashed passwords (tern passwd); every client must then authenticate")
	fs.StringVar(&c.ACLFile, "acl-file", c.ACLFile, "`FILE` of topic rules in mosquitto's acl_file format (user/topic/pattern); access is denied unless granted")
	fs.IntVar(&c.MaxPacketSize, "max-packet-size", c.MaxPacketSize, "largest inbound packet in `BYTES`")
	fs.IntVar(&c.EventLoops, "event-loops", c.EventLoops, "number of event loops (0: one per CPU)")
	fs.StringVar(&c.AdminListen, "admin", c.AdminListen, "`HOST:PORT` for the HTTP admin listener: Prometheus /metrics, /healthz and the admin API /api/v1/ (empty: off)")
	fs.Var(&replaceList{p: &c.AdminUsers}, "admin-user", "`USER` of the password file allowed to use the admin API with HTTP basic auth; repeatable (replaces the file's admin_users)")
	fs.StringVar(&c.Cluster.Node, "node", c.Cluster.Node, "this node's `NAME` in a cluster (with --cluster-listen)")
	fs.StringVar(&c.Cluster.Listen, "cluster-listen", c.Cluster.Listen, "`HOST:PORT` other cluster nodes connect to (empty: a single broker, no cluster)")
	fs.Var(&commaList{p: &c.Cluster.Peers}, "cluster-peers", "`HOST:PORT,...` cluster listen addresses of the other nodes (replaces the file's cluster.peers)")
	return sf
}

// applyListeners turns the listener flags into c's TLS and WebSocket
// listeners; given, they replace the file's.
func (sf *serveFlags) applyListeners(c *fileConfig) error {
	set := map[string]bool{}
	sf.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, f := range []string{"tls-cert", "tls-key", "tls-client-ca", "tls-client-auth", "tls-identity-from", "tls-min-version"} {
		if set[f] && !set["tls-listen"] {
			return fmt.Errorf("--%s goes with --tls-listen", f)
		}
	}
	if set["tls-listen"] {
		c.TLSListeners = nil
		for _, a := range sf.tlsListen {
			c.TLSListeners = append(c.TLSListeners, server.TLSListener{Addr: a, CertFile: sf.tlsCert, KeyFile: sf.tlsKey,
				ClientCAFile: sf.tlsClientCA, ClientAuth: sf.tlsClientAuth, IdentityFrom: sf.tlsIdentityFrom, MinVersion: sf.tlsMinVersion})
		}
	}
	if set["ws-listen"] {
		c.WebSocketListeners = nil
		for _, a := range sf.wsListen {
			c.WebSocketListeners = append(c.WebSocketListeners, server.WebSocketListener{Addr: a})
		}
	}
	return nil
}

// parseServeArgs returns the configuration args describe: the --config
// file with the flags applied over it, defaults not yet filled. help is
// true when --help was asked for (usage already printed).
func parseServeArgs(args []string, out io.Writer) (c *fileConfig, sf *serveFlags, help bool, err error) {
	// First pass: find --config and reject bad flags. Bound to a defaulted
	// config, so --help shows the real defaults.
	var defaults fileConfig
	defaults.ensureDefaults()
	sf = newServeFlags(&defaults, out)
	if err := sf.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, true, nil
		}
		return nil, nil, false, err
	}
	if sf.fs.NArg() > 0 {
		return nil, nil, false, fmt.Errorf("unexpected argument %q (flags only; see --help)", sf.fs.Arg(0))
	}
	// Second pass: the same flags, bound to the file's values.
	c = &fileConfig{}
	if sf.configPath != "" {
		if err := loadConfigFile(sf.configPath, c); err != nil {
			return nil, nil, false, err
		}
	}
	sf = newServeFlags(c, io.Discard)
	if err := sf.fs.Parse(args); err != nil {
		return nil, nil, false, err
	}
	if err := sf.applyListeners(c); err != nil {
		return nil, nil, false, err
	}
	return c, sf, false, nil
}

// build turns c into the broker's Options: logger, password file and ACL
// file loaded, every default filled, every field validated.
func (c *fileConfig) build() (server.Options, error) {
	c.ensureDefaults()
	o := c.Options
	o.Version = buildInfo().Version
	logger, err := newLogger(c.LogLevel, c.LogFormat)
	if err == nil {
		o.Logger = logger
	}
	errs := []error{err, o.Validate()}
	// The files are read here too, only to report their problems with the
	// rest of the configuration's; server.New loads them (and Reload
	// reads them again).
	if c.ACLFile != "" {
		if _, err := auth.LoadACLFile(c.ACLFile); err != nil {
			errs = append(errs, fmt.Errorf("acl_file %s: %w", c.ACLFile, err))
		}
	}
	var pf *auth.PasswordFile
	if c.PasswordFile != "" {
		if pf, err = auth.LoadPasswordFile(c.PasswordFile); err != nil {
			errs = append(errs, fmt.Errorf("password_file %s: %w", c.PasswordFile, err))
		}
	}
	if c.AllowAnonymous && c.PasswordFile != "" {
		// With a password file every client authenticates, so
		// allow_anonymous would be silently ignored: say so instead.
		errs = append(errs, errors.New("allow_anonymous: cannot be combined with password_file (every client must then authenticate); remove allow_anonymous, or password_file for an open broker"))
	}
	seen := map[string]bool{}
	for i, m := range c.EnhancedAuth {
		key := fmt.Sprintf("enhanced_auth[%d]", i)
		switch {
		case seen[m]:
			errs = append(errs, fmt.Errorf("%s: %q listed twice", key, m))
		case m != auth.SCRAMSHA256Method:
			errs = append(errs, fmt.Errorf("%s: unknown method %q (supported: %s)", key, m, auth.SCRAMSHA256Method))
		case c.PasswordFile == "":
			errs = append(errs, fmt.Errorf("%s: %s needs password_file (its users are the SCRAM users)", key, m))
		case pf != nil:
			seen[m] = true
			o.EnhancedAuth = append(o.EnhancedAuth, auth.NewSCRAMSHA256(auth.SCRAMStoreFromPasswordFile(pf)))
		}
	}
	return o, errors.Join(errs...)
}

// printConfig writes c, defaults filled, as a configuration file.
func printConfig(w io.Writer, c *fileConfig) error {
	c.ensureDefaults()
	out, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}

func serveCmd(args []string) int {
	cfg, sf, help, err := parseServeArgs(args, os.Stderr)
	if help {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "tern serve: %v\n", err)
		return 2
	}
	if sf.printConfig {
		if err := printConfig(os.Stdout, cfg); err != nil {
			fmt.Fprintf(os.Stderr, "tern serve: %v\n", err)
			return 1
		}
		return 0
	}
	opts, err := cfg.build()
	if err != nil {
		fmt.Fprintf(os.Stderr, "tern serve: invalid configuration:\n%v\n", err)
		return 1
	}
	logger := opts.Logger
	spareProc(opts.EventLoops, logger) // procs.go
	logger.Info("effective configuration", "options", opts,
		"log_level", cfg.LogLevel, "log_format", cfg.LogFormat, "config", sf.configPath)
	if opts.Durability != server.DurabilityNone {
		if err := os.MkdirAll(opts.DataDir, 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "tern serve: data dir: %v\n", err)
			return 1
		}
	}
	srv, err := server.New(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tern serve: %v\n", err)
		return 1
	}
	// A reload takes log_level from the configuration file and flags again
	// (the files named by password_file and acl_file are re-read by the
	// broker itself; their names, like every other setting, stay).
	srv.OnReload("log_level", func() error {
		c, _, _, err := parseServeArgs(args, io.Discard)
		if err != nil {
			return err
		}
		c.ensureDefaults()
		lv, err := parseLevel(c.LogLevel)
		if err != nil {
			return err
		}
		if old := logLevel.Level(); old != lv {
			logLevel.Set(lv)
			logger.Info("log level changed", "from", old.String(), "to", lv.String())
		}
		return nil
	})
	reloadSCRAMWithPasswords(srv, opts)
	if opts.Cluster.Enabled() {
		node, err := cluster.Start(opts.Cluster, logger)
		if err == nil {
			err = node.Attach(srv)
		}
		if err != nil {
			_ = srv.Close()
			fmt.Fprintf(os.Stderr, "tern serve: %v\n", err)
			return 1
		}
		srv.SetCluster(node)
		defer node.Close() // after the broker closed: its last wills still go out
	}
	sig := make(chan os.Signal, 1)
	// SIGHUP (systemctl reload, mosquitto-style kill -HUP) reloads the
	// password file, the ACL file, TLS certificates and the log level; it
	// never takes the broker down.
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	var s os.Signal
	for s == nil {
		select {
		case err := <-errc:
			if err != nil {
				logger.Error("broker stopped", "err", err)
				return 1
			}
			return 0
		case got := <-sig:
			if got == syscall.SIGHUP {
				logger.Info("SIGHUP received: reloading")
				if err := srv.Reload(); err != nil {
					logger.Error("reload failed: what failed keeps its previous configuration", "err", err)
				} else {
					logger.Info("reload succeeded")
				}
				continue
			}
			s = got
		}
	}
	logger.Info("shutting down", "signal", s.String())
	if err := srv.Close(); err != nil {
		logger.Error("shutdown", "err", err)
	}
	if err := <-errc; err != nil {
		logger.Error("broker stopped", "err", err)
		return 1
	}
	logger.Info("stopped")
	return 0
}

// logLevel is the level the logger of tern serve logs at; a reload
// (SIGHUP) sets it from the configuration file again.
var logLevel slog.LevelVar

// parseLevel turns a log_level value into a slog.Level.
func parseLevel(level string) (slog.Level, error) {
	switch strings.ToLower(level) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log_level: must be debug, info, warn or error, got %q", level)
}

func newLogger(level, format string) (*slog.Logger, error) {
	lv, err := parseLevel(level)
	if err != nil {
		return nil, err
	}
	logLevel.Set(lv)
	ho := &slog.HandlerOptions{Level: &logLevel}
	switch strings.ToLower(format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(os.Stderr, ho)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, ho)), nil
	}
	return nil, fmt.Errorf("log_format: must be text or json, got %q", format)
}

// listFlag is a repeatable flag collecting its values.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// replaceList is a repeatable flag bound to a list option: its first use
// replaces the list (from the file or the default), later uses append.
type replaceList struct {
	p   *[]string
	set bool
}

func (l *replaceList) String() string {
	if l == nil || l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l *replaceList) Set(v string) error {
	if !l.set {
		*l.p, l.set = nil, true
	}
	*l.p = append(*l.p, v)
	return nil
}

// commaList is a flag bound to a list option given as comma-separated
// values; it replaces the list.
type commaList struct{ p *[]string }

func (l *commaList) String() string {
	if l == nil || l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l *commaList) Set(v string) error {
	*l.p = nil
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l.p = append(*l.p, s)
		}
	}
	return nil
}

// stringValue binds a flag to an option of a string type (Durability…).
type stringValue[T ~string] struct{ p *T }

func (v stringValue[T]) String() string {
	if v.p == nil {
		return ""
	}
	return string(*v.p)
}

func (v stringValue[T]) Set(s string) error { *v.p = T(s); return nil }

// reloadSCRAMWithPasswords makes every Reload refresh the SCRAM users
// from the password file (SCRAM's users are the password file's), after
// the broker has re-read the file; a file that does not load leaves both
// as they were.
func reloadSCRAMWithPasswords(srv *server.Server, opts server.Options) {
	for _, m := range opts.EnhancedAuth {
		if sc, ok := m.(*auth.SCRAM); ok && opts.PasswordFile != "" {
			srv.OnReload("scram", func() error {
				pf, err := auth.LoadPasswordFile(opts.PasswordFile)
				if err != nil {
					return err
				}
				sc.Store().ReplaceAll(auth.SCRAMStoreFromPasswordFile(pf))
				return nil
			})
		}
	}
}
