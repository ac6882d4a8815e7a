package auth

// SCRAM-SHA-256 from a password file. A Tern password file line keeps
// PBKDF2-HMAC-SHA256(password, salt, iterations) with a 32-byte key, which
// is exactly SCRAM's SaltedPassword = Hi(password, salt, i) for SHA-256
// (RFC 5802 §2.2, RFC 7677): the StoredKey and ServerKey a SCRAM
// credential needs derive from it without the password. So a broker
// configured with a password file can offer SCRAM-SHA-256 to the same
// users, and an operator keeps one file.

// SCRAMStoreFromPasswordFile returns a SCRAMStore holding a credential for
// every user of pf whose line is a Tern (pbkdf2-sha256) hash; mosquitto
// lines ($7$ PBKDF2-SHA512, $6$) cannot give a SHA-256 SaltedPassword, so
// those users authenticate with their password only. The store is a
// snapshot: a changed password file needs a new store.
func SCRAMStoreFromPasswordFile(pf *PasswordFile) *SCRAMStore {
	st := NewSCRAMStore()
	pf.mu.RLock()
	defer pf.mu.RUnlock()
	for user, e := range pf.entries {
		if e.scheme != schemeTern {
			continue
		}
		st.Set(user, scramFromSalted(e.key, e.salt, e.iter))
	}
	return st
}

// Store returns the SCRAMStore m checks users against (to change its users
// while the broker runs, e.g. on a reload of the password file).
func (m *SCRAM) Store() *SCRAMStore { return m.store }
