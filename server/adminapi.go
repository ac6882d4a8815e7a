package server

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/ternmq/tern/server/auth"
)

// The admin HTTP API: /api/v1/… on the admin listener (Options.AdminListen),
// JSON in and out, a thin layer over the introspection methods
// (introspect.go). README "Admin API" documents it with curl examples.
//
// Who may call it:
//   - with AdminToken set, "Authorization: Bearer <token>";
//   - with AdminUsers set, HTTP basic auth as one of those users, checked by
//     the Authenticator (the password file) with its failed-login lockouts;
//   - with neither, loopback peers only (Validate already refuses a
//     non-loopback admin listener without credentials; this also covers a
//     listener reached through a local proxy or port forward).
//
// A request without valid credentials gets 401; a non-loopback peer of an
// unauthenticated API gets 403. Both are counted as limit admin_auth and
// logged rate-limited. At most adminMaxInFlight API requests run at once
// (a full client list of a big fleet costs milliseconds of CPU, and a
// script in a loop must not take the broker's cores): more get 503 and
// count as admin_busy.

// adminMaxInFlight bounds concurrent /api/ requests.
const adminMaxInFlight = 4

// adminMaxBody bounds a request body. No endpoint takes one today; the
// bound keeps a client from streaming into a handler anyway.
const adminMaxBody = 4 << 10

// Page bounds of the list endpoints: a list is one JSON document built in
// memory, so its length is capped. The full client list of a fleet of
// 100,000 is one request; larger fleets page.
const (
	adminDefaultLimit     = 100
	adminMaxLimit         = 100_000
	adminDefaultPayload   = 1024    // retained payload bytes returned by default
	adminMaxPayload       = 1 << 20 // … at most (payload_limit)
	adminKickReasonMaxLen = 256
)

// apiError is the body of every error answer.
type apiError struct {
	Error  string `json:"error"`
	Status int    `json:"status"`
}

// adminAPI returns the /api/v1/ handler, authentication and the in-flight
// bound included.
func (s *Server) adminAPI() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/info", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.Info()) })
	mux.HandleFunc("GET /api/v1/clients", s.apiClients)
	mux.HandleFunc("GET /api/v1/clients/{id}", s.apiClient)
	mux.HandleFunc("DELETE /api/v1/clients/{id}", s.apiKick)
	mux.HandleFunc("GET /api/v1/sessions/{id}", s.apiSession)
	mux.HandleFunc("DELETE /api/v1/sessions/{id}", s.apiDeleteSession)
	mux.HandleFunc("GET /api/v1/retained", s.apiRetained)
	mux.HandleFunc("DELETE /api/v1/retained", s.apiDeleteRetained)            // ?topic=… (any topic)
	mux.HandleFunc("DELETE /api/v1/retained/{topic...}", s.apiDeleteRetained) // topics without empty levels
	mux.HandleFunc("GET /api/v1/subscriptions", s.apiSubscriptions)
	mux.HandleFunc("POST /api/v1/reload", s.apiReload)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		apiFail(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return s.limitAPI(mux)
}

// limitAPI bounds the API requests running at once (adminMaxInFlight) and
// their bodies, around next.
func (s *Server) limitAPI(next http.Handler) http.Handler {
	inflight := make(chan struct{}, adminMaxInFlight)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case inflight <- struct{}{}:
			defer func() { <-inflight }()
		default:
			s.refuse(limitAdminBusy, "", "", r.RemoteAddr, "admin API: "+strconv.Itoa(adminMaxInFlight)+" requests already running")
			w.Header().Set("Retry-After", "1")
			apiFail(w, http.StatusServiceUnavailable, "admin API busy: too many concurrent requests")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, adminMaxBody)
		w.Header().Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// adminAuth guards the admin listener: every path but /healthz needs the
// credentials configured (see above); /api/ without any configured is for
// loopback peers only, while /metrics then stays open as before.
func (s *Server) adminAuth(next http.Handler) http.Handler {
	token := []byte("Bearer " + s.opts.AdminToken)
	users := s.opts.AdminUsers
	needCreds := s.opts.AdminToken != "" || len(users) > 0
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		api := strings.HasPrefix(r.URL.Path, "/api/")
		if !needCreds {
			if api && !loopbackRemote(r.RemoteAddr) {
				s.refuse(limitAdminAuth, "", "", r.RemoteAddr, "admin API: refused a non-loopback peer (no admin_token or admin_users configured)")
				apiFail(w, http.StatusForbidden, "the admin API answers loopback clients only unless admin_token or admin_users is configured")
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		user, ok := s.adminCredentials(r, token, users)
		if !ok {
			s.refuse(limitAdminAuth, "", user, r.RemoteAddr, "admin request without valid credentials: "+r.Method+" "+r.URL.Path)
			var challenge []string
			if s.opts.AdminToken != "" {
				challenge = append(challenge, `Bearer realm="tern admin"`)
			}
			if len(users) > 0 {
				challenge = append(challenge, `Basic realm="tern admin", charset="UTF-8"`)
			}
			w.Header().Set("WWW-Authenticate", strings.Join(challenge, ", "))
			if api {
				apiFail(w, http.StatusUnauthorized, "unauthorized: send the admin token as a bearer token, or an admin user's credentials")
			} else {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
			}
			return
		}
		if api && r.Method != http.MethodGet && r.Method != http.MethodHead {
			s.log.Info("admin API request", "method", r.Method, "path", r.URL.Path, "user", user, "remote", r.RemoteAddr)
		}
		next.ServeHTTP(w, r)
	})
}

// adminCredentials checks r's Authorization header: the bearer token
// (compared in constant time) or an admin user's basic credentials. It
// returns the user name it saw (for the refusal log) and whether they are
// valid.
func (s *Server) adminCredentials(r *http.Request, token []byte, users []string) (string, bool) {
	h := r.Header.Get("Authorization")
	if s.opts.AdminToken != "" && strings.HasPrefix(h, "Bearer ") {
		return "", subtle.ConstantTimeCompare([]byte(h), token) == 1
	}
	user, pass, ok := r.BasicAuth()
	if !ok || len(users) == 0 {
		return "", false
	}
	if !slices.Contains(users, user) || s.opts.Authenticator == nil {
		return user, false
	}
	var remote net.Addr
	if ap, err := net.ResolveTCPAddr("tcp", r.RemoteAddr); err == nil {
		remote = ap // keys the password file's per-address lockout
	}
	err := s.opts.Authenticator.Authenticate(auth.ConnectInfo{ClientID: "tern-admin-api", Username: user,
		Password: []byte(pass), Remote: remote, Local: s.adminAddr, ProtocolVersion: 0})
	return user, err == nil
}

// loopbackRemote reports whether an http.Request.RemoteAddr is a loopback peer.
func loopbackRemote(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v) // the client went away: nothing to tell it
}

func apiFail(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiError{Error: msg, Status: status})
}

// apiErr answers err from an introspection method: 404 for ErrNotFound,
// 400 for a bad topic or filter, 503 while shutting down, 500 otherwise.
func apiErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		apiFail(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrInvalidTopic), errors.Is(err, errBadRequest):
		apiFail(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrServerClosed):
		apiFail(w, http.StatusServiceUnavailable, err.Error())
	default:
		apiFail(w, http.StatusInternalServerError, err.Error())
	}
}

var errBadRequest = errors.New("bad request")

// intParam reads a non-negative integer query parameter, def when absent,
// at most max.
func intParam(r *http.Request, name string, def, max int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, errors.Join(errBadRequest, errors.New(name+" must be a non-negative integer, got "+strconv.Quote(v)))
	}
	if n > max {
		return 0, errors.Join(errBadRequest, errors.New(name+" must be at most "+strconv.Itoa(max)))
	}
	return n, nil
}

// boolParam reads a boolean query parameter (1, true, yes; absent: false).
func boolParam(r *http.Request, name string) (bool, error) {
	switch v := r.URL.Query().Get(name); v {
	case "", "0", "false", "no":
		return false, nil
	case "1", "true", "yes":
		return true, nil
	default:
		return false, errors.Join(errBadRequest, errors.New(name+" must be true or false, got "+strconv.Quote(v)))
	}
}

// GET /api/v1/clients?search=&id_prefix=&username=&address=&offline=&after=&offset=&limit=
func (s *Server) apiClients(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := ClientFilter{Search: q.Get("search"), IDPrefix: q.Get("id_prefix"), Username: q.Get("username"),
		Address: q.Get("address"), After: q.Get("after")}
	var err error
	if f.Limit, err = intParam(r, "limit", adminDefaultLimit, adminMaxLimit); err == nil {
		if f.Offset, err = intParam(r, "offset", 0, adminMaxLimit); err == nil {
			f.Offline, err = boolParam(r, "offline")
		}
	}
	if err != nil {
		apiErr(w, err)
		return
	}
	if f.Limit == 0 {
		f.Limit = adminDefaultLimit
	}
	writeJSON(w, http.StatusOK, s.Clients(f))
}

// GET /api/v1/clients/{id}
func (s *Server) apiClient(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	info, ok := s.ClientInfo(id)
	if !ok {
		apiFail(w, http.StatusNotFound, "not found: client "+strconv.Quote(id))
		return
	}
	writeJSON(w, http.StatusOK, info)
}

// DELETE /api/v1/clients/{id}?reason=
func (s *Server) apiKick(w http.ResponseWriter, r *http.Request) {
	reason := r.URL.Query().Get("reason")
	if len(reason) > adminKickReasonMaxLen {
		apiFail(w, http.StatusBadRequest, "reason longer than "+strconv.Itoa(adminKickReasonMaxLen)+" bytes")
		return
	}
	id := r.PathValue("id")
	if err := s.Kick(id, reason); err != nil {
		apiErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"kicked": id})
}

// GET /api/v1/sessions/{id}
func (s *Server) apiSession(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	info, ok := s.Session(id)
	if !ok {
		apiFail(w, http.StatusNotFound, "not found: session "+strconv.Quote(id))
		return
	}
	writeJSON(w, http.StatusOK, info)
}

// DELETE /api/v1/sessions/{id}
func (s *Server) apiDeleteSession(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.DeleteSession(id); err != nil {
		apiErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": id})
}

// retainedPage is the answer of GET /api/v1/retained.
type retainedPage struct {
	Retained  []RetainedInfo `json:"retained"`
	Truncated bool           `json:"truncated,omitempty"` // limit left some out
}

// GET /api/v1/retained?filter=&limit=&payload_limit=
func (s *Server) apiRetained(w http.ResponseWriter, r *http.Request) {
	filter := r.URL.Query().Get("filter")
	if filter == "" {
		filter = "#"
	}
	limit, err := intParam(r, "limit", adminDefaultLimit, adminMaxLimit)
	if err != nil {
		apiErr(w, err)
		return
	}
	if limit == 0 {
		limit = adminDefaultLimit
	}
	plim, err := intParam(r, "payload_limit", adminDefaultPayload, adminMaxPayload)
	if err != nil {
		apiErr(w, err)
		return
	}
	list, err := s.Retained(filter, limit+1) // one more tells whether limit truncated
	if err != nil {
		apiErr(w, errors.Join(errBadRequest, err))
		return
	}
	page := retainedPage{Retained: list}
	if len(list) > limit {
		page.Retained, page.Truncated = list[:limit], true
	}
	for i := range page.Retained {
		if p := &page.Retained[i].Payload; len(*p) > plim {
			*p = (*p)[:plim]
		}
	}
	if page.Retained == nil {
		page.Retained = []RetainedInfo{}
	}
	writeJSON(w, http.StatusOK, page)
}

// DELETE /api/v1/retained/{topic...} or /api/v1/retained?topic=
func (s *Server) apiDeleteRetained(w http.ResponseWriter, r *http.Request) {
	topic := r.PathValue("topic")
	if topic == "" {
		topic = r.URL.Query().Get("topic")
	}
	if topic == "" {
		apiFail(w, http.StatusBadRequest, "name the topic: DELETE /api/v1/retained/{topic} or ?topic=")
		return
	}
	if err := s.DeleteRetained(topic); err != nil {
		apiErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": topic})
}

// GET /api/v1/subscriptions?filter=&limit=
func (s *Server) apiSubscriptions(w http.ResponseWriter, r *http.Request) {
	limit, err := intParam(r, "limit", adminMaxLimit, adminMaxLimit)
	if err != nil {
		apiErr(w, err)
		return
	}
	if limit == 0 {
		limit = adminMaxLimit
	}
	list := s.Subscriptions(r.URL.Query().Get("filter"), limit)
	if list.Filters == nil {
		list.Filters = []FilterSubscribers{}
	}
	writeJSON(w, http.StatusOK, list)
}

// POST /api/v1/reload runs Server.Reload (password file, ACL file, TLS
// certificates and whatever OnReload registered): 200 when everything
// reloaded, 422 with the errors otherwise (what failed keeps its previous
// configuration; see Reload).
func (s *Server) apiReload(w http.ResponseWriter, r *http.Request) {
	if err := s.Reload(); err != nil {
		apiFail(w, http.StatusUnprocessableEntity, "reload failed, the previous configuration stays where it failed: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"reloaded": true})
}
