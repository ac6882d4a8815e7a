// Package authtest holds the client side of the broker's authentication
// methods, for tests. It is written from the RFCs independently of
// package auth (it does not import it), so a test that runs both sides
// checks the broker against the standard rather than against itself.
package authtest

import (
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
)

// SCRAMClient is the client side of SCRAM-SHA-256 (RFC 5802, RFC 7677)
// without channel binding. One conversation at a time: First starts it,
// Final answers the server's challenge, Verify checks the server's
// signature. It is safe for concurrent use (an MQTT client library may call
// it from its own goroutines).
type SCRAMClient struct {
	// User is sent as is in n= (the caller escapes ',' and '=').
	User, Password string

	mu          sync.Mutex
	clientBare  string
	authMessage string
	serverKey   []byte
}

// First starts a conversation and returns the client-first message.
func (s *SCRAMClient) First() []byte {
	var n [12]byte
	_, _ = rand.Read(n[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clientBare = "n=" + s.User + ",r=" + base64.RawStdEncoding.EncodeToString(n[:])
	return []byte("n,," + s.clientBare)
}

// Final answers server-first with client-final.
func (s *SCRAMClient) Final(serverFirst string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var nonce, salt string
	iter := 0
	for _, a := range strings.Split(serverFirst, ",") {
		switch {
		case strings.HasPrefix(a, "r="):
			nonce = a[2:]
		case strings.HasPrefix(a, "s="):
			salt = a[2:]
		case strings.HasPrefix(a, "i="):
			iter, _ = strconv.Atoi(a[2:])
		}
	}
	_, cnonce, _ := strings.Cut(s.clientBare, ",r=")
	rawSalt, err := base64.StdEncoding.DecodeString(salt)
	if err != nil || iter == 0 || cnonce == "" || !strings.HasPrefix(nonce, cnonce) {
		return nil, errors.New("authtest: bad server-first message")
	}
	salted, err := pbkdf2.Key(sha256.New, s.Password, rawSalt, iter, 32)
	if err != nil {
		return nil, err
	}
	mac := func(k []byte, m string) []byte { h := hmac.New(sha256.New, k); h.Write([]byte(m)); return h.Sum(nil) }
	clientKey := mac(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	without := "c=biws,r=" + nonce
	s.authMessage = s.clientBare + "," + serverFirst + "," + without
	proof := make([]byte, 32)
	subtle.XORBytes(proof, clientKey, mac(stored[:], s.authMessage))
	s.serverKey = mac(salted, "Server Key")
	return []byte(without + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

// Verify checks the server-final message: the broker knew the credential.
func (s *SCRAMClient) Verify(serverFinal []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := hmac.New(sha256.New, s.serverKey)
	h.Write([]byte(s.authMessage))
	return string(serverFinal) == "v="+base64.StdEncoding.EncodeToString(h.Sum(nil))
}
