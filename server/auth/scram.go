package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ternmq/tern/codec"
)

// SCRAM-SHA-256 (RFC 5802, RFC 7677) as an MQTT 5.0 Authentication Method.
// The broker never sees nor stores the password: it keeps, per user, a
// salt, an iteration count and two keys derived from the password.
//
//	SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations)
//	ClientKey      = HMAC(SaltedPassword, "Client Key")
//	StoredKey      = SHA-256(ClientKey)                    stored
//	ServerKey      = HMAC(SaltedPassword, "Server Key")    stored
//
// The conversation, mapped onto MQTT:
//
//	CONNECT data  client-first  "n,,n=user,r=<client nonce>"
//	AUTH 0x18     server-first  "r=<client nonce><server nonce>,s=<salt>,i=<iterations>"
//	AUTH 0x18     client-final  "c=biws,r=<nonce>,p=<ClientKey XOR HMAC(StoredKey, AuthMessage)>"
//	CONNACK data  server-final  "v=<HMAC(ServerKey, AuthMessage)>"
//
// AuthMessage = client-first-bare "," server-first "," client-final
// without its proof. The broker checks SHA-256(proof XOR
// HMAC(StoredKey, AuthMessage)) == StoredKey; the client checks v= and so
// knows the broker holds its credentials. Channel binding is not offered
// (gs2 header "n" or "y"). An unknown user gets a well-formed challenge
// with a salt derived from the name and the iteration count most users
// have, so failures do not reveal which users exist. Verifying costs two
// HMACs and a hash: the PBKDF2 work happens on the client, and once on the
// broker when the credential is made. Because a guess is cheap for the
// broker, failed proofs go to a Limiter.
//
// A successful exchange makes the SCRAM user the client's identity; a
// CONNECT User Name, if any, must be the same user, and so must the user of
// a re-authentication.

// SCRAMSHA256Method is the Authentication Method name of SCRAM-SHA-256.
const SCRAMSHA256Method = "SCRAM-SHA-256"

// SCRAMCredential is what the broker stores for one SCRAM user.
type SCRAMCredential struct {
	Salt       []byte
	Iterations int
	StoredKey  [32]byte
	ServerKey  [32]byte
}

// NewSCRAMCredential derives a credential from password with a random
// 16-byte salt. iterations ≤ 0 means 4096 (RFC 7677's minimum).
func NewSCRAMCredential(password string, iterations int) (SCRAMCredential, error) {
	if iterations <= 0 {
		iterations = 4096
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return SCRAMCredential{}, err
	}
	return scramDerive(password, salt, iterations)
}

func scramDerive(password string, salt []byte, iterations int) (SCRAMCredential, error) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return SCRAMCredential{}, err
	}
	return scramFromSalted(salted, salt, iterations), nil
}

// scramFromSalted makes the credential of SaltedPassword salted (RFC 5802
// §3: StoredKey = H(HMAC(salted, "Client Key")), ServerKey = HMAC(salted,
// "Server Key")).
func scramFromSalted(salted, salt []byte, iterations int) SCRAMCredential {
	cred := SCRAMCredential{Salt: salt, Iterations: iterations}
	cred.StoredKey = sha256.Sum256(hmacSHA256(salted, "Client Key"))
	copy(cred.ServerKey[:], hmacSHA256(salted, "Server Key"))
	return cred
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// SCRAMStore holds SCRAM credentials by user name. It is safe for
// concurrent use; users may be changed while the broker runs.
type SCRAMStore struct {
	mu     sync.RWMutex
	users  map[string]SCRAMCredential
	iters  map[int]int // how many users have each iteration count
	secret [32]byte    // derives salts for unknown users
}

// NewSCRAMStore returns an empty store.
func NewSCRAMStore() *SCRAMStore {
	s := &SCRAMStore{users: make(map[string]SCRAMCredential), iters: make(map[int]int)}
	_, _ = rand.Read(s.secret[:])
	return s
}

// Set adds or replaces user's credential.
func (s *SCRAMStore) Set(user string, cred SCRAMCredential) {
	s.mu.Lock()
	s.forgetLocked(user)
	s.users[user] = cred
	s.iters[cred.Iterations]++
	s.mu.Unlock()
}

// AddUser derives a credential from password (4096 iterations) and sets it.
func (s *SCRAMStore) AddUser(user, password string) error {
	cred, err := NewSCRAMCredential(password, 0)
	if err != nil {
		return err
	}
	s.Set(user, cred)
	return nil
}

// ReplaceAll makes s hold exactly from's users, in one step: an exchange
// in progress sees the old credentials or the new ones, never a mix. from
// must not be used afterwards. Safe for concurrent use (a reload of the
// password file calls it while clients authenticate).
func (s *SCRAMStore) ReplaceAll(from *SCRAMStore) {
	from.mu.Lock()
	users, iters := from.users, from.iters
	from.users, from.iters = nil, nil
	from.mu.Unlock()
	s.mu.Lock()
	s.users, s.iters = users, iters
	s.mu.Unlock()
}

// Delete removes user.
func (s *SCRAMStore) Delete(user string) {
	s.mu.Lock()
	s.forgetLocked(user)
	s.mu.Unlock()
}

func (s *SCRAMStore) forgetLocked(user string) {
	if old, ok := s.users[user]; ok {
		if s.iters[old.Iterations]--; s.iters[old.Iterations] <= 0 {
			delete(s.iters, old.Iterations)
		}
		delete(s.users, user)
	}
}

// lookup returns user's credential, or for an unknown user a decoy: a salt
// derived from the name (the same on every attempt, as a real one would
// be) and the iteration count most users have, so that the challenge does
// not tell whether the user exists.
func (s *SCRAMStore) lookup(user string) (SCRAMCredential, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if c, ok := s.users[user]; ok {
		return c, true
	}
	iter, best := 4096, 0
	for it, n := range s.iters {
		if n > best || (n == best && it > iter) {
			iter, best = it, n
		}
	}
	return SCRAMCredential{Salt: hmacSHA256(s.secret[:], user)[:16], Iterations: iter}, false
}

// SCRAM is the SCRAM-SHA-256 Authentication Method: an
// EnhancedAuthenticator whose conversations check users against a
// SCRAMStore. Failed proofs go to a Limiter, like PasswordFile's: a locked
// out user name or address is refused at its client-first message with
// ErrLockedOut. After a successful exchange the SCRAM user name is the
// client's identity (Identity), whatever the CONNECT said. Safe for
// concurrent use.
type SCRAM struct {
	store   *SCRAMStore
	limiter atomic.Pointer[Limiter]
}

// NewSCRAMSHA256 returns the SCRAM-SHA-256 Authentication Method checking
// users against store, with a Limiter of NewLimiter's defaults.
func NewSCRAMSHA256(store *SCRAMStore) *SCRAM {
	a := &SCRAM{store: store}
	a.limiter.Store(NewLimiter(LimiterConfig{}))
	return a
}

// Method implements EnhancedAuthenticator.
func (a *SCRAM) Method() string { return SCRAMSHA256Method }

// Limiter returns the failure limiter in use (nil: none).
func (a *SCRAM) Limiter() *Limiter { return a.limiter.Load() }

// SetLimiter replaces the failure limiter; nil turns limiting off. Safe to
// call while the broker runs.
func (a *SCRAM) SetLimiter(l *Limiter) { a.limiter.Store(l) }

// Start implements EnhancedAuthenticator.
func (a *SCRAM) Start(info ConnectInfo) Exchange {
	return &scramExchange{store: a.store, lim: a.limiter.Load(), remote: info.Remote, connectUser: info.Username}
}

// scramExchange is one SCRAM conversation: step 0 reads client-first,
// step 1 client-final.
type scramExchange struct {
	store       *SCRAMStore
	lim         *Limiter
	remote      net.Addr
	connectUser string
	step        int
	user        string
	known       bool
	ok          bool // the proof was verified
	cred        SCRAMCredential
	gs2         string // gs2 header, echoed base64 in c=
	clientBare  string
	serverFirst string
	nonce       string
}

// Identity implements IdentifiedExchange: the SCRAM user name, once the
// exchange succeeded ("" before).
func (x *scramExchange) Identity() string {
	if !x.ok {
		return ""
	}
	return x.user
}

var errSCRAM = errors.New("scram: authentication failed")

func scramErr(msg string) error {
	return codec.Errf(codec.NotAuthorized, "", "scram: %s", msg)
}

func (x *scramExchange) Step(data []byte) ([]byte, bool, error) {
	switch x.step {
	case 0:
		x.step = 1
		return x.clientFirst(string(data))
	case 1:
		x.step = 2
		return x.clientFinal(string(data))
	}
	return nil, false, scramErr("unexpected message after the exchange ended")
}

func (x *scramExchange) clientFirst(msg string) ([]byte, bool, error) {
	// gs2-header: cbind-flag "," [authzid] ","
	var gs2 string
	switch {
	case strings.HasPrefix(msg, "n,"), strings.HasPrefix(msg, "y,"):
	case strings.HasPrefix(msg, "p="):
		return nil, false, scramErr("channel binding is not supported")
	default:
		return nil, false, scramErr("malformed client-first message")
	}
	i := strings.IndexByte(msg[2:], ',')
	if i < 0 {
		return nil, false, scramErr("malformed gs2 header")
	}
	gs2, x.clientBare = msg[:2+i+1], msg[2+i+1:]
	x.gs2 = gs2
	attrs := strings.Split(x.clientBare, ",")
	if len(attrs) < 2 || !strings.HasPrefix(attrs[0], "n=") || !strings.HasPrefix(attrs[1], "r=") {
		return nil, false, scramErr("client-first message needs n= and r=")
	}
	user, ok := scramUnescape(attrs[0][2:])
	cnonce := attrs[1][2:]
	if !ok || user == "" || cnonce == "" {
		return nil, false, scramErr("bad user name or nonce")
	}
	if x.connectUser != "" && x.connectUser != user {
		return nil, false, scramErr("SCRAM user differs from the CONNECT user name")
	}
	if err := x.lim.Allow(user, x.remote); err != nil {
		return nil, false, err
	}
	x.user = user
	x.cred, x.known = x.store.lookup(user)
	var rnd [18]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, false, err
	}
	x.nonce = cnonce + base64.RawURLEncoding.EncodeToString(rnd[:])
	x.serverFirst = "r=" + x.nonce + ",s=" + base64.StdEncoding.EncodeToString(x.cred.Salt) + ",i=" + strconv.Itoa(x.cred.Iterations)
	return []byte(x.serverFirst), false, nil
}

func (x *scramExchange) clientFinal(msg string) ([]byte, bool, error) {
	i := strings.LastIndex(msg, ",p=")
	if i < 0 {
		return nil, false, scramErr("client-final message without proof")
	}
	without, proofB64 := msg[:i], msg[i+3:]
	attrs := strings.Split(without, ",")
	if len(attrs) < 2 || attrs[0] != "c="+base64.StdEncoding.EncodeToString([]byte(x.gs2)) {
		return nil, false, scramErr("channel binding data does not match")
	}
	if attrs[1] != "r="+x.nonce {
		return nil, false, scramErr("nonce does not match")
	}
	proof, err := base64.StdEncoding.DecodeString(proofB64)
	if err != nil || len(proof) != sha256.Size {
		return nil, false, scramErr("malformed proof")
	}
	authMsg := x.clientBare + "," + x.serverFirst + "," + without
	sig := hmacSHA256(x.cred.StoredKey[:], authMsg)
	clientKey := make([]byte, sha256.Size)
	subtle.XORBytes(clientKey, proof, sig)
	stored := sha256.Sum256(clientKey)
	if subtle.ConstantTimeCompare(stored[:], x.cred.StoredKey[:]) != 1 || !x.known {
		x.lim.Failed(x.user, x.remote)
		return nil, false, codec.Errf(codec.NotAuthorized, "", "%v for user %q", errSCRAM, x.user)
	}
	x.ok = true
	serverSig := hmacSHA256(x.cred.ServerKey[:], authMsg)
	return []byte("v=" + base64.StdEncoding.EncodeToString(serverSig)), true, nil
}

// scramUnescape decodes a SCRAM saslname ("=2C" is ",", "=3D" is "=").
func scramUnescape(s string) (string, bool) {
	if !strings.Contains(s, "=") {
		return s, true
	}
	var b bytes.Buffer
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "=2C"):
			b.WriteByte(',')
		case strings.HasPrefix(s[i:], "=3D"):
			b.WriteByte('=')
		default:
			return "", false
		}
		i += 2
	}
	return b.String(), true
}
