package auth

import (
	"bufio"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// PasswordFile is an Authenticator backed by a file of hashed passwords,
// one user per line, in Tern's format or in mosquitto's (so a mosquitto
// password_file works unchanged):
//
//	username:pbkdf2-sha256$<iterations>$<salt, base64>$<key, base64>   tern passwd
//	username:$7$<iterations>$<salt, base64>$<key, base64>               mosquitto ≥ 2.0: PBKDF2-HMAC-SHA512
//	username:$6$<salt, base64>$<hash, base64>                           mosquitto 1.x: SHA-512(password ‖ salt)
//
// Lines starting with '#' and blank lines are ignored. `tern passwd` writes
// entries. A "$6$" entry costs one SHA-512, so an offline guess is cheap if
// the file leaks: rehash those users with tern passwd (or mosquitto_passwd)
// when you can.
//
// Checking a password costs one PBKDF2 derivation (about 1–2 ms at the
// default iterations; the broker runs it off the event loops). Successful
// checks are remembered, so a fleet reconnecting after an outage pays it
// once per device, not once per connect: AuthenticateCached answers a
// remembered check in about a microsecond (the broker calls it on the
// event loop, before queueing the derivation). What is remembered is an
// HMAC-SHA256 of user, password and the user's file line under a random
// key made when the file is loaded, so the memory holds nothing an
// offline guess could be checked against without that key; the line is
// part of it, so a changed entry is never answered from that memory, and
// Replace (a reload) forgets it all. At most passwordCacheMax checks are
// remembered; CacheStats counts hits and misses.
//
// Guessing is slowed twice over. A user name that is not in the file costs
// the same derivation (against a decoy entry with the file's usual
// iteration count) and fails the same way, so timing does not tell which
// users exist. And failures go to a Limiter (NewLimiter's defaults unless
// SetLimiter says otherwise), which locks out a user name or source
// address after a burst of failures.
//
// A PasswordFile is safe for concurrent use.
type PasswordFile struct {
	mu      sync.RWMutex
	entries map[string]passwordEntry
	ok      map[[32]byte]struct{} // keyed hashes of verified checks (cacheKeyOf)
	okKey   [32]byte              // the HMAC key of ok, random per file
	decoy   passwordEntry         // what an unknown user's password is derived against
	limiter atomic.Pointer[Limiter]
	hits    atomic.Uint64
	misses  atomic.Uint64
}

// passwordCacheMax bounds the remembered checks: a million devices, ~80
// MB at most. When full, the oldest memory is dropped whole (cleared)
// rather than refusing to remember the devices reconnecting now.
const passwordCacheMax = 1 << 20

type passwordEntry struct {
	scheme    hashScheme
	iter      int
	salt, key []byte
	line      string
}

// hashScheme is how an entry's key derives from the password.
type hashScheme uint8

const (
	schemeTern  hashScheme = iota // pbkdf2-sha256: PBKDF2-HMAC-SHA256, 32-byte key
	schemeMosq7                   // mosquitto $7$: PBKDF2-HMAC-SHA512, 64-byte key
	schemeMosq6                   // mosquitto $6$: SHA-512(password ‖ salt), 64 bytes
)

// derive computes the key the entry's scheme derives from password.
func (e *passwordEntry) derive(password []byte) ([]byte, error) {
	switch e.scheme {
	case schemeMosq7:
		return pbkdf2.Key(sha512.New, string(password), e.salt, e.iter, sha512.Size)
	case schemeMosq6:
		h := sha512.New()
		h.Write(password)
		h.Write(e.salt)
		return h.Sum(nil), nil
	}
	return pbkdf2.Key(sha256.New, string(password), e.salt, e.iter, sha256.Size)
}

// DefaultPasswordIterations is what HashPassword uses: enough to slow
// offline guessing, cheap enough (about a millisecond here) for the loop.
const DefaultPasswordIterations = 10000

// errBadCredentials is what a failed check reports (never which part failed).
var errBadCredentials = errors.New("bad username or password")

// LoadPasswordFile reads a password file.
func LoadPasswordFile(path string) (*PasswordFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParsePasswordFile(f)
}

// ParsePasswordFile parses password file content, reporting every bad line.
func ParsePasswordFile(r io.Reader) (*PasswordFile, error) {
	pf := &PasswordFile{entries: map[string]passwordEntry{}, ok: map[[32]byte]struct{}{}}
	_, _ = rand.Read(pf.okKey[:]) // rand.Read never returns an error (it aborts the program instead)
	pf.limiter.Store(NewLimiter(LimiterConfig{}))
	sc := bufio.NewScanner(r)
	var errs []error
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, e, err := parsePasswordLine(line)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", n, err))
			continue
		}
		pf.entries[user] = e
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	decoy, err := newDecoy(pf.entries)
	if err != nil {
		errs = append(errs, err)
	}
	pf.decoy = decoy
	return pf, errors.Join(errs...)
}

// newDecoy makes the entry unknown users are checked against: random salt
// and key (no password matches), and the scheme and iteration count most
// entries use, so that its derivation takes as long as theirs.
func newDecoy(entries map[string]passwordEntry) (passwordEntry, error) {
	type kind struct {
		scheme hashScheme
		iter   int
	}
	count := map[kind]int{}
	best, bestN := kind{schemeTern, DefaultPasswordIterations}, 0
	for _, e := range entries {
		k := kind{e.scheme, e.iter}
		count[k]++
		if n := count[k]; n > bestN || (n == bestN && (k.scheme > best.scheme || (k.scheme == best.scheme && k.iter > best.iter))) {
			best, bestN = k, n
		}
	}
	size := sha256.Size
	if best.scheme != schemeTern {
		size = sha512.Size
	}
	d := passwordEntry{scheme: best.scheme, iter: best.iter, salt: make([]byte, 16), key: make([]byte, size)}
	if _, err := rand.Read(d.salt); err != nil {
		return d, err
	}
	_, err := rand.Read(d.key)
	return d, err
}

// Replace makes pf check against next's entries from now on, keeping pf's
// Limiter (lockouts in force stay in force) and forgetting every verified
// credential pf remembered. It is how a reload takes effect: the broker
// keeps the same Authenticator. Safe to call while pf is in use; a check
// already running finishes against the entries it started with.
func (pf *PasswordFile) Replace(next *PasswordFile) {
	next.mu.RLock()
	entries, decoy := next.entries, next.decoy
	next.mu.RUnlock()
	pf.mu.Lock()
	pf.entries, pf.decoy = entries, decoy
	pf.ok = map[[32]byte]struct{}{}
	_, _ = rand.Read(pf.okKey[:]) // a new key: nothing remembered before matches (rand.Read never fails)
	pf.mu.Unlock()
}

// Len returns the number of users in the file.
func (pf *PasswordFile) Len() int {
	pf.mu.RLock()
	defer pf.mu.RUnlock()
	return len(pf.entries)
}

// Limiter returns the failure limiter in use (nil: none).
func (pf *PasswordFile) Limiter() *Limiter { return pf.limiter.Load() }

// SetLimiter replaces the failure limiter; nil turns limiting off. One
// Limiter may be shared with other authenticators (e.g. SCRAM), so that
// failures on either count together. Safe to call while the broker runs.
func (pf *PasswordFile) SetLimiter(l *Limiter) { pf.limiter.Store(l) }

func parsePasswordLine(line string) (string, passwordEntry, error) {
	user, hash, ok := strings.Cut(line, ":")
	if !ok || user == "" {
		return "", passwordEntry{}, errors.New("want username:hash")
	}
	if strings.HasPrefix(hash, "$6$") || strings.HasPrefix(hash, "$7$") {
		e, err := parseMosquitto(hash)
		e.line = line
		return user, e, err
	}
	parts := strings.Split(hash, "$")
	if len(parts) != 4 || parts[0] != "pbkdf2-sha256" {
		return "", passwordEntry{}, errors.New("hash must be pbkdf2-sha256$<iterations>$<salt>$<key> (write it with tern passwd) or mosquitto's $7$… / $6$…")
	}
	iter, err := strconv.Atoi(parts[1])
	if err != nil || iter < 1 || iter > 10_000_000 {
		return "", passwordEntry{}, fmt.Errorf("iterations %q: want 1 to 10000000", parts[1])
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[2])
	key, err2 := base64.RawStdEncoding.DecodeString(parts[3])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(key) != sha256.Size {
		return "", passwordEntry{}, errors.New("salt or key is not valid base64 of the right length")
	}
	return user, passwordEntry{iter: iter, salt: salt, key: key, line: line}, nil
}

// parseMosquitto parses a mosquitto password hash: "$7$<iterations>$<salt>$<key>"
// (PBKDF2-HMAC-SHA512) or "$6$<salt>$<hash>" (salted SHA-512), salt and key
// in padded standard base64 as mosquitto_passwd writes them.
func parseMosquitto(hash string) (passwordEntry, error) {
	parts := strings.Split(hash, "$") // "", "7", iterations, salt, key
	e := passwordEntry{scheme: schemeMosq7, iter: 1}
	var salt, key string
	switch {
	case parts[1] == "7" && len(parts) == 5:
		iter, err := strconv.Atoi(parts[2])
		if err != nil || iter < 1 || iter > 10_000_000 {
			return e, fmt.Errorf("mosquitto $7$ iterations %q: want 1 to 10000000", parts[2])
		}
		e.iter, salt, key = iter, parts[3], parts[4]
	case parts[1] == "6" && len(parts) == 4:
		e.scheme, salt, key = schemeMosq6, parts[2], parts[3]
	default:
		return e, errors.New("mosquitto hash must be $7$<iterations>$<salt>$<hash> or $6$<salt>$<hash>")
	}
	var err1, err2 error
	e.salt, err1 = decodeB64(salt)
	e.key, err2 = decodeB64(key)
	if err1 != nil || err2 != nil || len(e.salt) < 8 || len(e.key) != sha512.Size {
		return e, errors.New("mosquitto hash: salt or hash is not valid base64 of the right length")
	}
	return e, nil
}

// decodeB64 accepts standard base64 with or without padding.
func decodeB64(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// HashPassword returns a password file line for user.
func HashPassword(user, password string, iterations int) (string, error) {
	if user == "" || strings.ContainsAny(user, ":\n") {
		return "", errors.New("username must be non-empty and contain no ':' or newline")
	}
	if iterations <= 0 {
		iterations = DefaultPasswordIterations
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s:pbkdf2-sha256$%d$%s$%s", user, iterations,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// Authenticate implements Authenticator. It refuses with ErrLockedOut
// while the user name or source address is locked out, and otherwise with
// an error that never says whether the user or the password was wrong.
func (pf *PasswordFile) Authenticate(c ConnectInfo) error {
	lim := pf.limiter.Load()
	if err := lim.Allow(c.Username, c.Remote); err != nil {
		return err
	}
	if c.Username == "" {
		// No user can have an empty name (HashPassword refuses it), so
		// there is nothing to hide and no derivation to spend.
		lim.Failed("", c.Remote)
		return errBadCredentials
	}
	pf.mu.RLock()
	e, known := pf.entries[c.Username]
	if !known {
		e = pf.decoy
	}
	pf.mu.RUnlock()
	sum := pf.cacheKeyOf(c, e)
	pf.mu.RLock()
	_, cached := pf.ok[sum]
	pf.mu.RUnlock()
	if cached && known {
		pf.hits.Add(1)
		return nil
	}
	pf.misses.Add(1)
	// Known or not, one derivation and one constant-time comparison.
	key, err := e.derive(c.Password)
	match := err == nil && subtle.ConstantTimeCompare(key, e.key) == 1
	if !match || !known {
		lim.Failed(c.Username, c.Remote)
		return errBadCredentials
	}
	pf.mu.Lock()
	if len(pf.ok) >= passwordCacheMax {
		pf.ok = map[[32]byte]struct{}{}
	}
	pf.ok[sum] = struct{}{}
	pf.mu.Unlock()
	return nil
}

// cacheKeyOf is what a verified check is remembered by: HMAC-SHA256 under
// pf.okKey of the user, the password and the user's entry line.
func (pf *PasswordFile) cacheKeyOf(c ConnectInfo, e passwordEntry) (sum [32]byte) {
	pf.mu.RLock()
	key := pf.okKey
	pf.mu.RUnlock()
	h := hmac.New(sha256.New, key[:])
	h.Write([]byte(c.Username))
	h.Write([]byte{0})
	h.Write(c.Password)
	h.Write([]byte{0})
	h.Write([]byte(e.line))
	h.Sum(sum[:0])
	return sum
}

// AuthenticateCached reports whether c's credentials were verified before
// (since the file was loaded or last replaced) and c's user name and
// address are not locked out: then c is authenticated, as Authenticate
// would say, without a derivation (about a microsecond). false means
// "ask Authenticate", not "refused". Safe for concurrent use; it does not
// block, so the broker calls it on the event loop.
func (pf *PasswordFile) AuthenticateCached(c ConnectInfo) bool {
	if c.Username == "" {
		return false
	}
	pf.mu.RLock()
	e, known := pf.entries[c.Username]
	pf.mu.RUnlock()
	if !known || pf.limiter.Load().locked(c.Username, c.Remote) { // Authenticate refuses and counts it
		return false
	}
	sum := pf.cacheKeyOf(c, e)
	pf.mu.RLock()
	_, cached := pf.ok[sum]
	pf.mu.RUnlock()
	if cached {
		pf.hits.Add(1)
	}
	return cached
}

// CacheStats returns how many checks were answered from the remembered
// ones (hits) and how many needed a derivation (misses, failures
// included), since the file was loaded.
func (pf *PasswordFile) CacheStats() (hits, misses uint64) {
	return pf.hits.Load(), pf.misses.Load()
}
