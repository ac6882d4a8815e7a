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
	"strconv"
	"strings"
	"sync"

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
// with a salt derived from the name, so failures do not reveal which users
// exist. Verifying costs two HMACs and a hash: the PBKDF2 work happens once,
// when the credential is made.

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
	cred := SCRAMCredential{Salt: salt, Iterations: iterations}
	cred.StoredKey = sha256.Sum256(hmacSHA256(salted, "Client Key"))
	copy(cred.ServerKey[:], hmacSHA256(salted, "Server Key"))
	return cred, nil
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
	secret [32]byte // derives salts for unknown users
}

// NewSCRAMStore returns an empty store.
func NewSCRAMStore() *SCRAMStore {
	s := &SCRAMStore{users: make(map[string]SCRAMCredential)}
	_, _ = rand.Read(s.secret[:])
	return s
}

// Set adds or replaces user's credential.
func (s *SCRAMStore) Set(user string, cred SCRAMCredential) {
	s.mu.Lock()
	s.users[user] = cred
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

// Delete removes user.
func (s *SCRAMStore) Delete(user string) {
	s.mu.Lock()
	delete(s.users, user)
	s.mu.Unlock()
}

func (s *SCRAMStore) lookup(user string) (SCRAMCredential, bool) {
	s.mu.RLock()
	c, ok := s.users[user]
	s.mu.RUnlock()
	return c, ok
}

// NewSCRAMSHA256 returns the SCRAM-SHA-256 Authentication Method checking
// users against store.
func NewSCRAMSHA256(store *SCRAMStore) EnhancedAuthenticator { return &scramAuth{store: store} }

type scramAuth struct{ store *SCRAMStore }

func (a *scramAuth) Method() string { return SCRAMSHA256Method }

func (a *scramAuth) Start(info ConnectInfo) Exchange {
	return &scramExchange{store: a.store, connectUser: info.Username}
}

// scramExchange is one SCRAM conversation: step 0 reads client-first,
// step 1 client-final.
type scramExchange struct {
	store       *SCRAMStore
	connectUser string
	step        int
	user        string
	known       bool
	cred        SCRAMCredential
	gs2         string // gs2 header, echoed base64 in c=
	clientBare  string
	serverFirst string
	nonce       string
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
	x.user = user
	x.cred, x.known = x.store.lookup(user)
	if !x.known {
		salt := hmacSHA256(x.store.secret[:], user)[:16]
		x.cred = SCRAMCredential{Salt: salt, Iterations: 4096}
	}
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
	if !x.known || subtle.ConstantTimeCompare(stored[:], x.cred.StoredKey[:]) != 1 {
		return nil, false, codec.Errf(codec.NotAuthorized, "", "%v for user %q", errSCRAM, x.user)
	}
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
