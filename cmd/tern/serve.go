package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ternmq/tern/server"
	"github.com/ternmq/tern/server/auth"
)

// config is the file format of tern.yaml (see tern.example.yaml). Every
// field is optional; flags override the file.
type config struct {
	Listeners         []string      `yaml:"listeners"`
	TLSListeners      []tlsConfig   `yaml:"tls_listeners"`
	WSListeners       []wsConfig    `yaml:"websocket_listeners"`
	DataDir           string        `yaml:"data_dir"`
	Durability        string        `yaml:"durability"`
	SyncInterval      time.Duration `yaml:"sync_interval"`
	AllowAnonymous    bool          `yaml:"allow_anonymous"`
	PasswordFile      string        `yaml:"password_file"`
	ACLFile           string        `yaml:"acl_file"`
	LogLevel          string        `yaml:"log_level"`
	LogFormat         string        `yaml:"log_format"`
	MaxPacketSize     int           `yaml:"max_packet_size"`
	ConnectTimeout    time.Duration `yaml:"connect_timeout"`
	MaxKeepAlive      uint16        `yaml:"max_keepalive"`
	ReceiveMaximum    int           `yaml:"receive_maximum"`
	MaxQueuedMessages int           `yaml:"max_queued_messages"`
	MaxQueuedBytes    int           `yaml:"max_queued_bytes"`
	MaxOutboundBytes  int           `yaml:"max_outbound_bytes"`
	MaxTopicLevels    int           `yaml:"max_topic_levels"`
	MaxSessionExpiry  time.Duration `yaml:"max_session_expiry"`
	EventLoops        int           `yaml:"event_loops"`
	AdminListen       string        `yaml:"admin_listen"`
	SysInterval       time.Duration `yaml:"sys_interval"`
}

// tlsConfig is one entry of tls_listeners.
type tlsConfig struct {
	Addr     string `yaml:"addr"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// wsConfig is one entry of websocket_listeners.
type wsConfig struct {
	Addr     string `yaml:"addr"`
	Path     string `yaml:"path"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func serveCmd(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: tern serve [flags]

Runs the broker until SIGINT or SIGTERM. Settings come from the defaults, then
the --config file, then flags.

Flags:
`)
		fs.PrintDefaults()
	}
	var listeners listFlag
	fs.Var(&listeners, "listen", "`HOST:PORT` to accept MQTT on; repeat for several (default 127.0.0.1:1883)")
	configPath := fs.String("config", "", "YAML configuration `FILE` (see tern.example.yaml)")
	var tlsListen listFlag
	fs.Var(&tlsListen, "tls-listen", "`HOST:PORT` to accept MQTT over TLS on (needs --tls-cert and --tls-key); repeatable")
	tlsCert := fs.String("tls-cert", "", "PEM certificate chain `FILE` for --tls-listen")
	tlsKey := fs.String("tls-key", "", "PEM private key `FILE` for --tls-listen")
	var wsListen listFlag
	fs.Var(&wsListen, "ws-listen", "`HOST:PORT` to accept MQTT over WebSocket on (path /mqtt); repeatable")
	dataDir := fs.String("data", "", "`DIR` for durable state (default ./data)")
	durability := fs.String("durability", "", "`MODE`: sync (acknowledge only what is fsynced; default), periodic (fsync every --sync-interval; a crash may lose that much acknowledged data), none (memory only)")
	syncInterval := fs.Duration("sync-interval", 0, "fsync period for --durability periodic (default 100ms)")
	logLevel := fs.String("log-level", "", "log level: debug, info, warn, error (default info)")
	logFormat := fs.String("log-format", "", "log format: text or json (default text)")
	allowAnon := fs.Bool("allow-anonymous", false, "accept clients without credentials on non-loopback listeners too")
	passwords := fs.String("password-file", "", "`FILE` of users and hashed passwords (tern passwd); every client must then authenticate")
	aclPath := fs.String("acl-file", "", "`FILE` of topic rules in mosquitto's acl_file format (user/topic/pattern); access is denied unless granted")
	maxPacket := fs.Int("max-packet-size", 0, "largest inbound packet in `BYTES` (default 1048576)")
	loops := fs.Int("event-loops", 0, "number of event loops (default: number of CPUs)")
	admin := fs.String("admin", "", "`HOST:PORT` for the HTTP admin listener: Prometheus /metrics and /healthz (default off)")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "tern serve: unexpected argument %q (flags only; see --help)\n", fs.Arg(0))
		return 2
	}
	var cfg config
	if *configPath != "" {
		raw, err := os.ReadFile(*configPath)
		if err != nil {
			fmt.Fprintf(os.Stderr, "tern serve: %v\n", err)
			return 1
		}
		dec := yaml.NewDecoder(strings.NewReader(string(raw)))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil {
			fmt.Fprintf(os.Stderr, "tern serve: config %s: %v\n", *configPath, err)
			return 1
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "listen":
			cfg.Listeners = listeners
		case "ws-listen":
			cfg.WSListeners = nil
			for _, a := range wsListen {
				cfg.WSListeners = append(cfg.WSListeners, wsConfig{Addr: a})
			}
		case "tls-listen":
			cfg.TLSListeners = nil
			for _, a := range tlsListen {
				cfg.TLSListeners = append(cfg.TLSListeners, tlsConfig{Addr: a, CertFile: *tlsCert, KeyFile: *tlsKey})
			}
		case "data":
			cfg.DataDir = *dataDir
		case "durability":
			cfg.Durability = *durability
		case "sync-interval":
			cfg.SyncInterval = *syncInterval
		case "log-level":
			cfg.LogLevel = *logLevel
		case "log-format":
			cfg.LogFormat = *logFormat
		case "allow-anonymous":
			cfg.AllowAnonymous = *allowAnon
		case "password-file":
			cfg.PasswordFile = *passwords
		case "acl-file":
			cfg.ACLFile = *aclPath
		case "max-packet-size":
			cfg.MaxPacketSize = *maxPacket
		case "event-loops":
			cfg.EventLoops = *loops
		case "admin":
			cfg.AdminListen = *admin
		}
	})
	logger, err := newLogger(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tern serve: %v\n", err)
		return 2
	}
	opts := server.Options{
		Listeners:         cfg.Listeners,
		DataDir:           cfg.DataDir,
		Durability:        server.Durability(cfg.Durability),
		SyncInterval:      cfg.SyncInterval,
		AllowAnonymous:    cfg.AllowAnonymous,
		MaxPacketSize:     cfg.MaxPacketSize,
		ConnectTimeout:    cfg.ConnectTimeout,
		MaxKeepAlive:      cfg.MaxKeepAlive,
		ReceiveMaximum:    cfg.ReceiveMaximum,
		MaxQueuedMessages: cfg.MaxQueuedMessages,
		MaxQueuedBytes:    cfg.MaxQueuedBytes,
		MaxOutboundBytes:  cfg.MaxOutboundBytes,
		MaxTopicLevels:    cfg.MaxTopicLevels,
		MaxSessionExpiry:  cfg.MaxSessionExpiry,
		EventLoops:        cfg.EventLoops,
		AdminListen:       cfg.AdminListen,
		SysInterval:       cfg.SysInterval,
		Version:           version,
		Logger:            logger,
	}
	for _, l := range cfg.TLSListeners {
		if l.Addr == "" || l.CertFile == "" || l.KeyFile == "" {
			fmt.Fprintf(os.Stderr, "tern serve: a TLS listener needs an address, a certificate and a key (--tls-listen, --tls-cert, --tls-key)\n")
			return 2
		}
		opts.TLSListeners = append(opts.TLSListeners, server.TLSListener{Addr: l.Addr, CertFile: l.CertFile, KeyFile: l.KeyFile})
	}
	for _, l := range cfg.WSListeners {
		if l.Addr == "" || (l.CertFile == "") != (l.KeyFile == "") {
			fmt.Fprintf(os.Stderr, "tern serve: a WebSocket listener needs an address (and both cert_file and key_file for wss)\n")
			return 2
		}
		opts.WebSocketListeners = append(opts.WebSocketListeners, server.WebSocketListener{Addr: l.Addr, Path: l.Path, CertFile: l.CertFile, KeyFile: l.KeyFile})
	}
	if cfg.ACLFile != "" {
		acl, err := auth.LoadACLFile(cfg.ACLFile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "tern serve: ACL file %s: %v\n", cfg.ACLFile, err)
			return 1
		}
		opts.Authorizer = acl
	}
	if cfg.PasswordFile != "" {
		pf, err := auth.LoadPasswordFile(cfg.PasswordFile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "tern serve: password file %s: %v\n", cfg.PasswordFile, err)
			return 1
		}
		opts.Authenticator = pf
	}
	if opts.DataDir == "" {
		opts.DataDir = "./data"
	}
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
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	select {
	case err := <-errc:
		if err != nil {
			logger.Error("broker stopped", "err", err)
			return 1
		}
		return 0
	case s := <-sig:
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
}

func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	switch strings.ToLower(level) {
	case "", "info":
		lv = slog.LevelInfo
	case "debug":
		lv = slog.LevelDebug
	case "warn", "warning":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	ho := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(os.Stderr, ho)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, ho)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}
