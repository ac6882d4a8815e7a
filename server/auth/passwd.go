package auth

import (
	"bufio"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
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
// one user per line:
//
//	username:pbkdf2-sha256$<iterations>$<salt, base64>$<key, base64>
//
// Lines starting with '#' and blank lines are ignored. `tern passwd` writes
// entries.
//
// Checking a password costs one PBKDF2 derivation (about 1–2 ms at the
// default iterations) on the event loop. Successful checks are remembered
// by a SHA-256 of user, password and the user's file line, so a fleet
// reconnecting after a broker restart pays it once per device, not once
// per connect; the line is part of the key, so a changed entry is never
// answered from that memory.
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
	ok      map[[32]byte]struct{}
	decoy   passwordEntry // what an unknown user's password is derived against
	limiter atomic.Pointer[Limiter]
}

type passwordEntry struct {
	iter      int
	salt, key []byte
	line      string
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
// and key (no password matches), and the iteration count most entries use,
// so that its derivation takes as long as theirs.
func newDecoy(entries map[string]passwordEntry) (passwordEntry, error) {
	count := map[int]int{}
	iter, best := DefaultPasswordIterations, 0
	for _, e := range entries {
		count[e.iter]++
		if n := count[e.iter]; n > best || (n == best && e.iter > iter) {
			iter, best = e.iter, n
		}
	}
	d := passwordEntry{iter: iter, salt: make([]byte, 16), key: make([]byte, sha256.Size)}
	if _, err := rand.Read(d.salt); err != nil {
		return d, err
	}
	_, err := rand.Read(d.key)
	return d, err
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
	parts := strings.Split(hash, "$")
	if len(parts) != 4 || parts[0] != "pbkdf2-sha256" {
		return "", passwordEntry{}, errors.New("hash must be pbkdf2-sha256$<iterations>$<salt>$<key> (write it with tern passwd)")
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
	h := sha256.New()
	h.Write([]byte(c.Username))
	h.Write([]byte{0})
	h.Write(c.Password)
	h.Write([]byte{0})
	h.Write([]byte(e.line))
	var sum [32]byte
	h.Sum(sum[:0])
	pf.mu.RLock()
	_, cached := pf.ok[sum]
	pf.mu.RUnlock()
	if cached && known {
		return nil
	}
	// Known or not, one derivation and one constant-time comparison.
	key, err := pbkdf2.Key(sha256.New, string(c.Password), e.salt, e.iter, sha256.Size)
	match := err == nil && subtle.ConstantTimeCompare(key, e.key) == 1
	if !match || !known {
		lim.Failed(c.Username, c.Remote)
		return errBadCredentials
	}
	pf.mu.Lock()
	if len(pf.ok) < 1<<20 { // bounded: a million remembered devices
		pf.ok[sum] = struct{}{}
	}
	pf.mu.Unlock()
	return nil
}
