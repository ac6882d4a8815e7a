package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/server/auth"
)

// adminBroker starts a broker with the admin listener on a free loopback
// port and returns it, its MQTT address and the API's base URL.
func adminBroker(t testing.TB, tweak func(*Options)) (*Server, string, string) {
	t.Helper()
	srv, addr := startBroker(t, func(o *Options) {
		o.AdminListen = "127.0.0.1:0"
		if tweak != nil {
			tweak(o)
		}
	})
	return srv, addr, "http://" + srv.AdminAddr().String() + "/api/v1"
}

// apiCall makes one HTTP request and returns the status and body. auth is
// applied to the request when not nil.
func apiCall(t testing.TB, method, u string, auth func(*http.Request)) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != nil {
		auth(req)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(u, "http") && strings.Contains(u, "/api/") && ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q, want application/json", method, u, ct)
	}
	return resp.StatusCode, body
}

// apiJSON makes a request that must answer want and decodes the body into v.
func apiJSON(t testing.TB, method, u string, want int, v any) {
	t.Helper()
	code, body := apiCall(t, method, u, nil)
	if code != want {
		t.Fatalf("%s %s: %d %s, want %d", method, u, code, body, want)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("%s %s: %v in %s", method, u, err, body)
		}
	}
}

// Listing, searching and paging connected paho clients: pages follow the
// cursor without loss or duplicates, in id order, and each entry reports
// the connection as the client made it.
func TestAdminAPIClientsListSearchAndPage(t *testing.T) {
	_, addr, api := adminBroker(t, nil)
	var ids []string
	for i := range 23 {
		id := fmt.Sprintf("dev-%03d", i)
		c := pahoClient(t, addr, id, func(o *mqtt.ClientOptions) { o.SetKeepAlive(45 * time.Second) })
		if i%2 == 0 {
			wait(t, c.Subscribe("devices/"+id+"/cmd", 1, nil), "subscribe")
		}
		ids = append(ids, id)
	}
	paho5(t, addr, "v5-client", nil)
	ids = append(ids, "v5-client")
	slices.Sort(ids)

	var seen []string
	after := ""
	for pages := 0; ; pages++ {
		var page ClientList
		apiJSON(t, "GET", api+"/clients?limit=10&after="+url.QueryEscape(after), 200, &page)
		if page.Total != len(ids)-len(seen) {
			t.Fatalf("page %d: total %d, want %d (clients after the cursor)", pages, page.Total, len(ids)-len(seen))
		}
		for _, c := range page.Clients {
			seen = append(seen, c.ID)
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	if !slices.Equal(seen, ids) {
		t.Fatalf("cursor pages gave %v, want %v", seen, ids)
	}

	var page ClientList
	apiJSON(t, "GET", api+"/clients?limit=5&offset=20", 200, &page)
	if page.Total != 24 || len(page.Clients) != 4 || page.Clients[0].ID != ids[20] || page.Next != "" {
		t.Fatalf("offset page: total %d, %d clients, first %q, next %q", page.Total, len(page.Clients), page.Clients[0].ID, page.Next)
	}

	apiJSON(t, "GET", api+"/clients?search=dev-01", 200, &page)
	if page.Total != 10 {
		t.Fatalf("search dev-01: %d clients, want 10", page.Total)
	}
	apiJSON(t, "GET", api+"/clients?id_prefix=v5&address=127.0.0.1:", 200, &page)
	if page.Total != 1 || page.Clients[0].ID != "v5-client" || page.Clients[0].ProtocolVersion != "5.0" {
		t.Fatalf("id_prefix v5: %+v", page)
	}
	apiJSON(t, "GET", api+"/clients?address=10.", 200, &page)
	if page.Total != 0 || page.Clients == nil {
		t.Fatalf("address 10.: %+v (want an empty list, not null)", page)
	}

	var c ClientInfo
	apiJSON(t, "GET", api+"/clients/dev-004", 200, &c)
	if !c.Connected || c.ProtocolVersion != "3.1.1" || c.KeepAlive != 45 || c.Subscriptions != 1 ||
		!strings.HasPrefix(c.RemoteAddr, "127.0.0.1:") || c.Listener != "tcp://"+addr ||
		time.Since(c.ConnectedSince) > time.Minute || c.Persistent {
		t.Fatalf("client dev-004: %+v", c)
	}
	code, body := apiCall(t, "GET", api+"/clients/nobody", nil)
	if code != 404 || !strings.Contains(string(body), `"error"`) {
		t.Fatalf("unknown client: %d %s", code, body)
	}
	for _, bad := range []string{"limit=-1", "limit=x", "offset=1000001", "offline=maybe"} {
		if code, body := apiCall(t, "GET", api+"/clients?"+bad, nil); code != 400 || !strings.Contains(string(body), `"error"`) {
			t.Errorf("clients?%s: %d %s, want 400 with a JSON error", bad, code, body)
		}
	}
	if code, _ := apiCall(t, "GET", api+"/nothing-here", nil); code != 404 {
		t.Errorf("unknown endpoint: %d", code)
	}
}

// Kick over HTTP: a 5.0 client is told DISCONNECT 0x98 Administrative
// action [MQTT-3.14.2-1]; a 3.1.1 client's connection is closed and its
// will published, as for any close without DISCONNECT [MQTT-3.1.2-8].
func TestAdminAPIKick_MQTT_3_1_2_8(t *testing.T) {
	_, addr, api := adminBroker(t, nil)
	got := make(chan *paho.Disconnect, 1)
	_, _, _, err := dial5(t, addr, &paho.Connect{ClientID: "kick5", CleanStart: true}, func(cc *paho.ClientConfig) {
		cc.OnServerDisconnect = func(d *paho.Disconnect) { got <- d }
	})
	if err != nil {
		t.Fatal(err)
	}
	apiJSON(t, "DELETE", api+"/clients/kick5?reason="+url.QueryEscape("maintenance"), 200, nil)
	select {
	case d := <-got:
		if d.ReasonCode != byte(codec.AdministrativeAction) {
			t.Fatalf("DISCONNECT reason %#x, want 0x98", d.ReasonCode)
		}
		if d.Properties == nil || !strings.Contains(d.Properties.ReasonString, "maintenance") {
			t.Errorf("reason string %+v, want the admin's reason", d.Properties)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no DISCONNECT after the kick")
	}

	wills := newReceived()
	watcher := pahoClient(t, addr, "watcher")
	subscribe(t, watcher, "wills/#", 1, wills)
	lost := make(chan error, 1)
	pahoClient(t, addr, "kick311", func(o *mqtt.ClientOptions) {
		o.SetWill("wills/kick311", "gone", 1, false)
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	})
	apiJSON(t, "DELETE", api+"/clients/kick311", 200, nil)
	if m := wills.waitN(t, 1, 5*time.Second)[0]; string(m.Payload()) != "gone" {
		t.Fatalf("will payload %q", m.Payload())
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("3.1.1 client still connected after the kick")
	}
	if code, body := apiCall(t, "DELETE", api+"/clients/kick311", nil); code != 404 {
		t.Fatalf("kicking a client that is gone: %d %s, want 404", code, body)
	}
}

// A persistent session seen and deleted through the API: its
// subscriptions, queued messages and offline times are reported; deleted
// (while offline, and while connected) it is gone for the client (Session
// Present 0 [MQTT-3.2.2-2]) and stays gone after a restart.
func TestAdminAPISessionShowAndDelete_MQTT_3_2_2_2(t *testing.T) {
	dir := t.TempDir()
	srv, addr, api := adminBroker(t, func(o *Options) { o.DataDir = dir })
	persistent := func(o *mqtt.ClientOptions) { o.SetCleanSession(false) }
	sub := pahoClient(t, addr, "fleet-1", persistent)
	wait(t, sub.Subscribe("fleet/1/#", 1, nil), "subscribe")
	wait(t, sub.Subscribe("fleet/all", 0, nil), "subscribe")
	sub.Disconnect(50)
	waitOffline(t, srv, "fleet-1")
	pub := pahoClient(t, addr, "pub")
	for i := range 5 {
		wait(t, pub.Publish("fleet/1/cmd", 1, false, fmt.Sprint(i)), "publish")
	}

	var si SessionInfo
	apiJSON(t, "GET", api+"/sessions/fleet-1", 200, &si)
	if si.Connected || !si.Persistent || si.Queued != 5 || si.Subscriptions != 2 || si.OfflineSince.IsZero() ||
		!si.ExpiresAt.After(si.OfflineSince) || len(si.SubscriptionList) != 2 ||
		si.SubscriptionList[0] != (SessionSubscription{Filter: "fleet/1/#", QoS: 1}) {
		t.Fatalf("session: %+v", si)
	}
	var cl ClientList
	apiJSON(t, "GET", api+"/clients?offline=1&id_prefix=fleet", 200, &cl)
	if cl.Total != 1 || cl.Clients[0].Connected {
		t.Fatalf("offline listing: %+v", cl)
	}
	apiJSON(t, "GET", api+"/clients?id_prefix=fleet", 200, &cl)
	if cl.Total != 0 {
		t.Fatalf("connected listing shows an offline session: %+v", cl)
	}

	apiJSON(t, "DELETE", api+"/sessions/fleet-1", 200, nil)
	if code, _ := apiCall(t, "GET", api+"/sessions/fleet-1", nil); code != 404 {
		t.Fatalf("deleted session still shown: %d", code)
	}
	if code, _ := apiCall(t, "DELETE", api+"/sessions/fleet-1", nil); code != 404 {
		t.Fatalf("second delete: %d, want 404", code)
	}

	// Connected: the client is disconnected and its session is gone.
	lost := make(chan error, 1)
	pahoClient(t, addr, "fleet-2", persistent, func(o *mqtt.ClientOptions) {
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	})
	apiJSON(t, "DELETE", api+"/sessions/fleet-2", 200, nil)
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("client of a deleted session still connected")
	}

	// A restart on the same data directory finds neither session.
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	_, addr2 := startBroker(t, func(o *Options) { o.DataDir = dir })
	for _, id := range []string{"fleet-1", "fleet-2"} {
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr2).SetClientID(id).SetCleanSession(false).SetAutoReconnect(false))
		tok := c.Connect()
		wait(t, tok, "reconnect "+id)
		if tok.(*mqtt.ConnectToken).SessionPresent() {
			t.Errorf("%s: session present after the admin deleted it and the broker restarted", id)
		}
		c.Disconnect(50)
	}
}

// Retained messages listed by filter and deleted by topic (path or query
// form); the deletion is what a subscriber and a restarted broker see.
func TestAdminAPIRetained_MQTT_3_3_1_10(t *testing.T) {
	dir := t.TempDir()
	srv, addr, api := adminBroker(t, func(o *Options) { o.DataDir = dir })
	pub := pahoClient(t, addr, "pub")
	for _, tp := range []string{"site/a/temp", "site/a/hum", "site/b/temp", "/lead/slash"} {
		wait(t, pub.Publish(tp, 1, true, "v:"+tp), "publish retained")
	}
	var page struct {
		Retained  []RetainedInfo
		Truncated bool
	}
	apiJSON(t, "GET", api+"/retained?filter="+url.QueryEscape("site/+/temp"), 200, &page)
	topics := []string{}
	for _, r := range page.Retained {
		topics = append(topics, r.Topic)
		if string(r.Payload) != "v:"+r.Topic || r.QoS != 1 || r.Size != len(r.Payload) {
			t.Errorf("retained %+v", r)
		}
	}
	slices.Sort(topics)
	if !slices.Equal(topics, []string{"site/a/temp", "site/b/temp"}) {
		t.Fatalf("site/+/temp: %v", topics)
	}
	apiJSON(t, "GET", api+"/retained?limit=2", 200, &page)
	if len(page.Retained) != 2 || !page.Truncated {
		t.Fatalf("limit 2 of 4: %d, truncated %v", len(page.Retained), page.Truncated)
	}
	apiJSON(t, "GET", api+"/retained?filter=site/a/temp&payload_limit=3", 200, &page)
	if len(page.Retained) != 1 || string(page.Retained[0].Payload) != "v:s" || page.Retained[0].Size != len("v:site/a/temp") {
		t.Fatalf("payload_limit: %+v", page.Retained)
	}
	if code, _ := apiCall(t, "GET", api+"/retained?filter="+url.QueryEscape("a/#/b"), nil); code != 400 {
		t.Fatalf("invalid filter: %d, want 400", code)
	}

	apiJSON(t, "DELETE", api+"/retained/site/a/temp", 200, nil)
	apiJSON(t, "DELETE", api+"/retained?topic="+url.QueryEscape("/lead/slash"), 200, nil)
	if code, _ := apiCall(t, "DELETE", api+"/retained/site/a/temp", nil); code != 404 {
		t.Fatalf("deleting it again: %d, want 404", code)
	}
	if code, _ := apiCall(t, "DELETE", api+"/retained?topic="+url.QueryEscape("site/#"), nil); code != 400 {
		t.Fatalf("deleting a filter: %d, want 400", code)
	}
	check := func(addr string) {
		r := newReceived()
		c := pahoClient(t, addr, "reader")
		subscribe(t, c, "#", 1, r)
		got := r.waitN(t, 2, 5*time.Second)
		r.quiet(t, 2, 300*time.Millisecond)
		var ts []string
		for _, m := range got {
			ts = append(ts, m.Topic())
		}
		slices.Sort(ts)
		if !slices.Equal(ts, []string{"site/a/hum", "site/b/temp"}) {
			t.Fatalf("retained after delete: %v", ts)
		}
		c.Disconnect(50)
	}
	check(addr)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	_, addr2 := startBroker(t, func(o *Options) { o.DataDir = dir })
	check(addr2)
}

// Subscriptions per filter, shared subscriptions included.
func TestAdminAPISubscriptions(t *testing.T) {
	_, addr, api := adminBroker(t, nil)
	for i := range 3 {
		c := pahoClient(t, addr, fmt.Sprintf("s%d", i))
		wait(t, c.Subscribe("alerts/#", byte(i%3), nil), "subscribe")
		if i == 2 {
			wait(t, c.Subscribe("$share/g/jobs", 1, nil), "subscribe")
		}
	}
	var list SubscriptionList
	apiJSON(t, "GET", api+"/subscriptions?filter="+url.QueryEscape("alerts/#"), 200, &list)
	if list.Total != 3 || len(list.Filters) != 1 || len(list.Filters[0].Subscribers) != 3 ||
		list.Filters[0].Subscribers[1] != (Subscriber{ClientID: "s1", Connected: true, QoS: 1}) {
		t.Fatalf("alerts/#: %+v", list)
	}
	apiJSON(t, "GET", api+"/subscriptions", 200, &list)
	if list.Total != 4 || len(list.Filters) != 2 || list.Filters[0].Filter != "$share/g/jobs" {
		t.Fatalf("all: %+v", list)
	}
	apiJSON(t, "GET", api+"/subscriptions?limit=2", 200, &list)
	if !list.Truncated || list.Total != 4 || len(list.Filters) != 2 || list.Filters[0].Filter != "$share/g/jobs" ||
		list.Filters[1].Filter != "alerts/#" || len(list.Filters[1].Subscribers) != 1 || list.Filters[1].Subscribers[0].ClientID != "s0" {
		t.Fatalf("limit 2 (the first two in filter, client order): %+v", list)
	}
	apiJSON(t, "GET", api+"/subscriptions?filter=none", 200, &list)
	if list.Total != 0 || list.Filters == nil {
		t.Fatalf("unknown filter: %+v", list)
	}
}

// Info reports the version, listeners and counts.
func TestAdminAPIInfo(t *testing.T) {
	srv, addr, api := adminBroker(t, nil)
	pahoClient(t, addr, "one")
	var bi BrokerInfo
	apiJSON(t, "GET", api+"/info", 200, &bi)
	if bi.Version != DefaultVersion || bi.Connected != 1 || bi.Sessions != 1 || bi.EventLoops != 2 ||
		!slices.Contains(bi.Listeners, "tcp://"+addr) || !slices.Contains(bi.Listeners, "http://"+srv.AdminAddr().String()) ||
		!bi.StoreAvailable || bi.Durability != "sync" {
		t.Fatalf("info: %+v", bi)
	}
}

// POST /api/v1/reload reloads the password file: a bad file is refused
// with 422 and the error, the users in force stay; a good one takes effect.
func TestAdminAPIReload(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "passwd")
	writeUsers := func(users ...string) {
		var lines []string
		for _, u := range users {
			line, err := auth.HashPassword(u, u+"-pw", 1000)
			if err != nil {
				t.Fatal(err)
			}
			lines = append(lines, line)
		}
		if err := os.WriteFile(pw, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeUsers("ops")
	_, _, api := adminBroker(t, func(o *Options) { o.PasswordFile, o.AdminUsers = pw, []string{"ops", "ops2"} })
	as := func(u string) func(*http.Request) { return func(r *http.Request) { r.SetBasicAuth(u, u+"-pw") } }
	if code, _ := apiCall(t, "GET", api+"/info", as("ops2")); code != 401 {
		t.Fatalf("ops2 before it exists: %d", code)
	}
	if err := os.WriteFile(pw, []byte("not a password line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, body := apiCall(t, "POST", api+"/reload", as("ops"))
	if code != http.StatusUnprocessableEntity || !strings.Contains(string(body), "password_file") {
		t.Fatalf("reload of a bad file: %d %s, want 422 naming password_file", code, body)
	}
	if code, _ := apiCall(t, "GET", api+"/info", as("ops")); code != 200 {
		t.Fatalf("ops after a refused reload: %d (the old file must stay in force)", code)
	}
	writeUsers("ops", "ops2")
	if code, body := apiCall(t, "POST", api+"/reload", as("ops")); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	if code, _ := apiCall(t, "GET", api+"/info", as("ops2")); code != 200 {
		t.Fatalf("ops2 after the reload: %d", code)
	}
	if code, _ := apiCall(t, "GET", api+"/reload", as("ops")); code == 200 {
		t.Fatal("GET /reload succeeded; it must be a POST")
	}
}

// Authentication: a bearer token, or an admin user's basic credentials
// checked against the password file; an MQTT user not listed as an admin,
// a wrong password or no credentials get 401, each counted as admin_auth.
func TestAdminAPIAuthentication(t *testing.T) {
	var lines []string
	for _, u := range []string{"ops", "device"} {
		line, err := auth.HashPassword(u, u+"-pw", 1000)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, line)
	}
	pf, err := auth.ParsePasswordFile(strings.NewReader(strings.Join(lines, "\n") + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv, _, api := adminBroker(t, func(o *Options) {
		o.Authenticator, o.AdminToken, o.AdminUsers = pf, "tok3n", []string{"ops"}
	})
	bearer := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	}
	basic := func(u, p string) func(*http.Request) { return func(r *http.Request) { r.SetBasicAuth(u, p) } }
	for _, tc := range []struct {
		name string
		auth func(*http.Request)
		want int
	}{
		{"none", nil, 401},
		{"wrong token", bearer("nope"), 401},
		{"token", bearer("tok3n"), 200},
		{"admin user", basic("ops", "ops-pw"), 200},
		{"admin user, wrong password", basic("ops", "bad"), 401},
		{"mqtt user not an admin", basic("device", "device-pw"), 401},
	} {
		code, body := apiCall(t, "GET", api+"/info", tc.auth)
		if code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
	}
	if n := srv.Refused()["admin_auth"]; n != 4 {
		t.Errorf("admin_auth refusals: %d, want 4", n)
	}
	// /metrics takes the same credentials; /healthz none.
	base := strings.TrimSuffix(api, "/api/v1")
	if code, _ := apiCall(t, "GET", base+"/metrics", basic("ops", "ops-pw")); code != 200 {
		t.Errorf("/metrics as an admin user: %d", code)
	}
	if code, _ := apiCall(t, "GET", base+"/healthz", nil); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if _, err := New(Options{Listeners: []string{"127.0.0.1:0"}, DataDir: t.TempDir(), AdminListen: "127.0.0.1:0", AdminUsers: []string{"ops"}}); err == nil ||
		!strings.Contains(err.Error(), "admin_users") {
		t.Errorf("admin_users without a password file: %v, want a refusal naming admin_users", err)
	}
	if _, err := New(Options{Listeners: []string{"127.0.0.1:0"}, DataDir: t.TempDir(), AdminListen: "0.0.0.0:0", AdminUsers: []string{"ops"}, Authenticator: pf}); err != nil {
		t.Errorf("admin on 0.0.0.0 with admin_users: %v", err)
	}
}

// Without credentials configured the API serves loopback peers only; the
// handler chain is the broker's own, the peer address a non-loopback one
// (a test cannot own one).
func TestAdminAPILoopbackOnlyWithoutCredentials(t *testing.T) {
	srv, _, api := adminBroker(t, nil)
	apiJSON(t, "GET", api+"/info", 200, nil) // from 127.0.0.1
	h := srv.adminAuth(srv.adminAPI())
	for _, remote := range []string{"10.1.2.3:4567", "[2001:db8::1]:80", "garbage"} {
		req := httptest.NewRequest("GET", "/api/v1/info", nil)
		req.RemoteAddr = remote
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "loopback") {
			t.Errorf("peer %s: %d %s, want 403", remote, rec.Code, rec.Body)
		}
	}
	req := httptest.NewRequest("GET", "/api/v1/info", nil)
	req.RemoteAddr = "[::1]:999"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Errorf("peer [::1]: %d", rec.Code)
	}
}

// At most adminMaxInFlight API requests run at once; the next is refused
// with 503 and counted as admin_busy, and the API serves again once they
// finish.
func TestAdminAPIBoundsConcurrentRequests(t *testing.T) {
	srv, _, _ := adminBroker(t, nil)
	busy := make(chan struct{})
	entered := make(chan struct{}, adminMaxInFlight)
	var inFlight sync.WaitGroup
	slow := srv.limitAPI(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-busy
	}))
	for range adminMaxInFlight {
		inFlight.Add(1)
		go func() {
			defer inFlight.Done()
			slow.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/api/v1/info", nil))
		}()
	}
	for range adminMaxInFlight {
		select {
		case <-entered:
		case <-time.After(5 * time.Second):
			t.Fatal("slow requests did not start")
		}
	}
	rec := httptest.NewRecorder()
	slow.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/info", nil))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("request over the bound: %d (Retry-After %q), want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	close(busy)
	inFlight.Wait()
	if srv.Refused()["admin_busy"] == 0 {
		t.Error("admin_busy not counted")
	}
	rec = httptest.NewRecorder()
	go func() { <-entered }()
	slow.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/info", nil)) // busy is closed: returns at once
	if rec.Code != 200 {
		t.Errorf("after the burst: %d", rec.Code)
	}
}
