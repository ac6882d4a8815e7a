package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ternmq/tern/server"
)

// tern ctl: the admin HTTP API (server/adminapi.go) from the command line.
// Every subcommand is one request (clients list --all: one per page); the
// answer is printed as a table or, with --json, as the API's JSON.

const ctlUsage = `Usage: tern ctl [flags] <command> [args] [flags]

Talks to a running broker's admin API (serve --admin HOST:PORT).

Commands:
  clients list [--search S] [--id-prefix P] [--username U] [--address A]
               [--offline] [--limit N] [--offset N] [--after ID] [--all]
  clients show ID
  clients kick ID [--reason TEXT]      disconnect (5.0: DISCONNECT 0x98); the will is published
  sessions show ID
  sessions delete ID                   disconnect if connected and delete the session and its stored state
  retained list [--filter F] [--limit N]
  retained delete TOPIC
  subs [--filter F] [--limit N]        which clients subscribe with which filter
  info                                 version, uptime, listeners, counts
  reload                               reload password file, ACL and certificates (as SIGHUP)

Flags (before or after the command):
  --admin URL      admin listener (default $TERN_ADMIN, else http://127.0.0.1:9883)
  --token TOKEN    bearer token (default $TERN_ADMIN_TOKEN)
  --user USER      admin user for HTTP basic auth; the password comes from $TERN_ADMIN_PASSWORD
  --json           print the API's JSON instead of a table
  --timeout D      per request (default 30s)

Exit status: 0 on success, 1 when the broker refused or failed the request
(the error is printed), 2 on a usage error.
`

// ctlOptions are the flags every ctl command takes.
type ctlOptions struct {
	admin, token, user string
	json               bool
	timeout            time.Duration
	stdout, stderr     io.Writer
}

func (o *ctlOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.admin, "admin", o.admin, "admin listener `URL`")
	fs.StringVar(&o.token, "token", o.token, "bearer `TOKEN`")
	fs.StringVar(&o.user, "user", o.user, "admin `USER` (password from $TERN_ADMIN_PASSWORD)")
	fs.BoolVar(&o.json, "json", o.json, "print JSON")
	fs.DurationVar(&o.timeout, "timeout", o.timeout, "per-request timeout")
}

func ctlCmd(args []string) int { return ctlMain(args, os.Stdout, os.Stderr) }

// errUsage marks a usage error (exit 2); its text is printed with the usage.
var errUsage = errors.New("usage")

func ctlMain(args []string, stdout, stderr io.Writer) int {
	o := &ctlOptions{admin: os.Getenv("TERN_ADMIN"), token: os.Getenv("TERN_ADMIN_TOKEN"), timeout: 30 * time.Second,
		stdout: stdout, stderr: stderr}
	if o.admin == "" {
		o.admin = "http://127.0.0.1:9883"
	}
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, ctlUsage) }
	o.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprint(stderr, ctlUsage)
		return 2
	}
	err := o.run(rest)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "tern ctl: %v\n\n%s", err, ctlUsage)
		return 2
	default:
		fmt.Fprintf(stderr, "tern ctl: %v\n", err)
		return 1
	}
}

// sub parses a subcommand's flags (the common ones again, so they may come
// after the command) and returns its positional arguments, which must
// number exactly npos.
func (o *ctlOptions) sub(name string, args []string, npos int, define func(fs *flag.FlagSet)) ([]string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(o.stderr)
	fs.Usage = func() { fmt.Fprint(o.stderr, ctlUsage) }
	o.register(fs)
	if define != nil {
		define(fs)
	}
	// Positional arguments may come before the flags ("kick ID --reason x").
	var pos []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		pos, args = append(pos, args[0]), args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %s: %v", errUsage, name, err)
	}
	pos = append(pos, fs.Args()...)
	if len(pos) != npos {
		return nil, fmt.Errorf("%w: %s takes %d argument(s), got %d", errUsage, name, npos, len(pos))
	}
	return pos, nil
}

func (o *ctlOptions) run(args []string) error {
	cmd, rest := args[0], args[1:]
	verb := ""
	switch cmd {
	case "clients", "sessions", "retained":
		if len(rest) == 0 {
			return fmt.Errorf("%w: %s needs a subcommand", errUsage, cmd)
		}
		verb, rest = rest[0], rest[1:]
	}
	switch cmd + " " + verb {
	case "clients list":
		return o.clientsList(rest)
	case "clients show":
		pos, err := o.sub("clients show", rest, 1, nil)
		if err != nil {
			return err
		}
		var c server.ClientInfo
		return o.do("GET", "/clients/"+url.PathEscape(pos[0]), nil, &c, func(w io.Writer) { printClient(w, c) })
	case "clients kick":
		var reason string
		pos, err := o.sub("clients kick", rest, 1, func(fs *flag.FlagSet) {
			fs.StringVar(&reason, "reason", "", "reason told to a 5.0 client and logged")
		})
		if err != nil {
			return err
		}
		q := url.Values{}
		if reason != "" {
			q.Set("reason", reason)
		}
		return o.do("DELETE", "/clients/"+url.PathEscape(pos[0]), q, nil, func(w io.Writer) { fmt.Fprintf(w, "kicked %s\n", pos[0]) })
	case "sessions show":
		pos, err := o.sub("sessions show", rest, 1, nil)
		if err != nil {
			return err
		}
		var s server.SessionInfo
		return o.do("GET", "/sessions/"+url.PathEscape(pos[0]), nil, &s, func(w io.Writer) { printSession(w, s) })
	case "sessions delete":
		pos, err := o.sub("sessions delete", rest, 1, nil)
		if err != nil {
			return err
		}
		return o.do("DELETE", "/sessions/"+url.PathEscape(pos[0]), nil, nil, func(w io.Writer) { fmt.Fprintf(w, "deleted session %s\n", pos[0]) })
	case "retained list":
		var filter string
		var limit int
		if _, err := o.sub("retained list", rest, 0, func(fs *flag.FlagSet) {
			fs.StringVar(&filter, "filter", "#", "topic `FILTER`")
			fs.IntVar(&limit, "limit", 100, "at most `N` messages")
		}); err != nil {
			return err
		}
		q := url.Values{"filter": {filter}, "limit": {strconv.Itoa(limit)}}
		var page struct {
			Retained  []server.RetainedInfo `json:"retained"`
			Truncated bool                  `json:"truncated"`
		}
		return o.do("GET", "/retained", q, &page, func(w io.Writer) {
			tw := table(w, "TOPIC\tQOS\tSIZE\tPAYLOAD")
			for _, r := range page.Retained {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", r.Topic, r.QoS, r.Size, payloadText(r.Payload, r.Size))
			}
			tw.Flush()
			if page.Truncated {
				fmt.Fprintf(w, "(more than %d; raise --limit)\n", limit)
			}
		})
	case "retained delete":
		pos, err := o.sub("retained delete", rest, 1, nil)
		if err != nil {
			return err
		}
		return o.do("DELETE", "/retained", url.Values{"topic": {pos[0]}}, nil, func(w io.Writer) { fmt.Fprintf(w, "deleted retained %s\n", pos[0]) })
	case "subs ":
		var filter string
		var limit int
		if _, err := o.sub("subs", rest, 0, func(fs *flag.FlagSet) {
			fs.StringVar(&filter, "filter", "", "only this exact `FILTER`")
			fs.IntVar(&limit, "limit", 0, "at most `N` subscriptions (0: the API's maximum)")
		}); err != nil {
			return err
		}
		q := url.Values{"filter": {filter}}
		if limit > 0 {
			q.Set("limit", strconv.Itoa(limit))
		}
		var list server.SubscriptionList
		return o.do("GET", "/subscriptions", q, &list, func(w io.Writer) {
			tw := table(w, "FILTER\tCLIENT\tQOS\tCONNECTED")
			for _, f := range list.Filters {
				for _, s := range f.Subscribers {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%v\n", f.Filter, s.ClientID, s.QoS, s.Connected)
				}
			}
			tw.Flush()
			if list.Truncated {
				fmt.Fprintf(w, "(%d in all; raise --limit)\n", list.Total)
			}
		})
	case "info ":
		if _, err := o.sub("info", rest, 0, nil); err != nil {
			return err
		}
		var bi server.BrokerInfo
		return o.do("GET", "/info", nil, &bi, func(w io.Writer) { printInfo(w, bi) })
	case "reload ":
		if _, err := o.sub("reload", rest, 0, nil); err != nil {
			return err
		}
		return o.do("POST", "/reload", nil, nil, func(w io.Writer) { fmt.Fprintln(w, "reloaded") })
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, strings.TrimSpace(cmd+" "+verb))
}

func (o *ctlOptions) clientsList(args []string) error {
	var search, idPrefix, username, address, after string
	var offline, all bool
	var limit, offset int
	if _, err := o.sub("clients list", args, 0, func(fs *flag.FlagSet) {
		fs.StringVar(&search, "search", "", "substring of the id, username or address")
		fs.StringVar(&idPrefix, "id-prefix", "", "client id `PREFIX`")
		fs.StringVar(&username, "username", "", "exact `USER`")
		fs.StringVar(&address, "address", "", "remote address `PREFIX`")
		fs.BoolVar(&offline, "offline", false, "include offline persistent sessions")
		fs.IntVar(&limit, "limit", 100, "clients per page")
		fs.IntVar(&offset, "offset", 0, "skip `N` clients")
		fs.StringVar(&after, "after", "", "start after client `ID` (cursor)")
		fs.BoolVar(&all, "all", false, "follow the pages to the end")
	}); err != nil {
		return err
	}
	q := url.Values{}
	for k, v := range map[string]string{"search": search, "id_prefix": idPrefix, "username": username, "address": address} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if offline {
		q.Set("offline", "true")
	}
	q.Set("limit", strconv.Itoa(limit))
	if offset > 0 {
		q.Set("offset", strconv.Itoa(offset))
	}
	var clients []server.ClientInfo
	total := 0
	for {
		if after != "" {
			q.Set("after", after)
		}
		var page server.ClientList
		if err := o.request("GET", "/clients", q, &page); err != nil {
			return err
		}
		if total == 0 {
			total = page.Total
		}
		clients = append(clients, page.Clients...)
		if !all || page.Next == "" {
			if o.json {
				page.Clients, page.Total = clients, total
				return writeIndented(o.stdout, page)
			}
			break
		}
		after = page.Next
		q.Del("offset")
	}
	tw := table(o.stdout, "ID\tUSERNAME\tADDRESS\tPROTO\tSUBS\tQUEUED\tINFLIGHT\tSINCE")
	for _, c := range clients {
		since := "offline"
		if c.Connected {
			since = c.ConnectedSince.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", c.ID, c.Username, c.RemoteAddr, c.ProtocolVersion,
			c.Subscriptions, c.Queued, c.Inflight, since)
	}
	tw.Flush()
	if len(clients) > 0 && len(clients) < total {
		fmt.Fprintf(o.stdout, "(%d of %d; --all or --after %s for more)\n", len(clients), total, clients[len(clients)-1].ID)
	}
	return nil
}

// do makes a request and prints the answer: its JSON with --json, else
// what human prints from out (decoded into when not nil).
func (o *ctlOptions) do(method, path string, q url.Values, out any, human func(io.Writer)) error {
	var raw json.RawMessage
	if err := o.request(method, path, q, &raw); err != nil {
		return err
	}
	if o.json {
		return writeIndented(o.stdout, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: unexpected answer: %w", method, path, err)
		}
	}
	human(o.stdout)
	return nil
}

// request calls the API and decodes a 2xx answer into out; any other
// status is an error carrying the API's message.
func (o *ctlOptions) request(method, path string, q url.Values, out any) error {
	base := strings.TrimSuffix(o.admin, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u := base + "/api/v1" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return fmt.Errorf("%w: --admin %q: %v", errUsage, o.admin, err)
	}
	switch {
	case o.user != "":
		req.SetBasicAuth(o.user, os.Getenv("TERN_ADMIN_PASSWORD"))
	case o.token != "":
		req.Header.Set("Authorization", "Bearer "+o.token)
	}
	resp, err := (&http.Client{Timeout: o.timeout}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, u, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s (HTTP %d)", e.Error, resp.StatusCode)
		}
		return fmt.Errorf("%s %s: HTTP %d: %s", method, u, resp.StatusCode, bytes.TrimSpace(body))
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s %s: not the admin API's JSON: %w", method, u, err)
	}
	return nil
}

func writeIndented(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func table(w io.Writer, header string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	return tw
}

// payloadText shows a payload as text when it is printable UTF-8, else
// as its size.
func payloadText(p []byte, size int) string {
	s := string(p)
	for _, r := range s {
		if r == 0xFFFD || (r < 0x20 && r != '\t') {
			return fmt.Sprintf("(%d bytes binary)", size)
		}
	}
	if len(p) < size {
		s += "…"
	}
	if len(s) > 60 {
		s = s[:57] + "…"
	}
	return strconv.Quote(s)
}

func printClient(w io.Writer, c server.ClientInfo) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, v) }
	row("id", c.ID)
	row("username", c.Username)
	row("connected", c.Connected)
	if c.Connected {
		row("remote address", c.RemoteAddr)
		row("listener", c.Listener)
		row("connected since", c.ConnectedSince.Local().Format(time.RFC3339))
		row("keepalive", strconv.Itoa(int(c.KeepAlive))+"s")
	} else if !c.OfflineSince.IsZero() {
		row("offline since", c.OfflineSince.Local().Format(time.RFC3339))
		if !c.ExpiresAt.IsZero() {
			row("expires at", c.ExpiresAt.Local().Format(time.RFC3339))
		}
	}
	row("protocol", c.ProtocolVersion)
	row("persistent", c.Persistent)
	row("session expiry", strconv.FormatUint(uint64(c.SessionExpiry), 10)+"s")
	row("subscriptions", c.Subscriptions)
	row("queued", fmt.Sprintf("%d (%d bytes in memory)", c.Queued, c.QueuedBytes))
	row("inflight", c.Inflight)
	row("dropped", c.Dropped)
	tw.Flush()
}

func printSession(w io.Writer, s server.SessionInfo) {
	printClient(w, s.ClientInfo)
	fmt.Fprintf(w, "inbound qos2\t%d\n", s.InboundQoS2)
	if len(s.SubscriptionList) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := table(w, "FILTER\tQOS\tNO LOCAL\tRETAIN AS PUBLISHED\tID")
	for _, sub := range s.SubscriptionList {
		fmt.Fprintf(tw, "%s\t%d\t%v\t%v\t%d\n", sub.Filter, sub.QoS, sub.NoLocal, sub.RetainAsPublished, sub.Identifier)
	}
	tw.Flush()
}

func printInfo(w io.Writer, bi server.BrokerInfo) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, v) }
	row("version", bi.Version)
	row("go", bi.GoVersion)
	row("uptime", (time.Duration(bi.UptimeSeconds) * time.Second).String())
	row("listeners", strings.Join(bi.Listeners, " "))
	row("durability", bi.Durability)
	row("event loops", bi.EventLoops)
	row("connections", bi.Connections)
	row("connected", bi.Connected)
	row("sessions", bi.Sessions)
	row("subscriptions", bi.Subscriptions)
	row("retained", bi.Retained)
	row("messages in/out/dropped", fmt.Sprintf("%d / %d / %d", bi.MessagesIn, bi.MessagesOut, bi.MessagesDropped))
	row("store available", bi.StoreAvailable)
	tw.Flush()
}
