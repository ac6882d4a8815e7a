package tlsloop

// The hand-over from crypto/tls to the record layer (package comment,
// "Record layer"): the traffic secrets from a per-connection KeyLogWriter,
// the cipher suite from the ServerHello crypto/tls wrote, and the number of
// records crypto/tls already sent under the server's application key (its
// NewSessionTicket), counted by opening them.

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"io"
	"slices"
)

// Key log labels (crypto/tls, NSS key log format) the hand-over needs.
const (
	labelClientTraffic = "CLIENT_TRAFFIC_SECRET_0"
	labelServerTraffic = "SERVER_TRAFFIC_SECRET_0"
)

// keyLogFront returns the tls.Config the listener's connections start
// with: base's, whose GetConfigForClient also gives every TLS 1.3
// handshake of this package a copy of the current generation with a
// KeyLogWriter bound to that connection. The secrets never leave the
// process: they go to the connection's handshake state and, once the
// record layer took them over, are gone with it. A KeyLogWriter the
// operator's own Config set still gets every line.
func keyLogFront(base *tls.Config) *tls.Config {
	front := base.Clone() // with base's session ticket keys: front owns them now
	inner := base.GetConfigForClient
	front.GetConfigForClient = func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		cfg := base
		if inner != nil {
			c, err := inner(chi)
			if err != nil {
				return nil, err
			}
			if c != nil {
				cfg = c
			}
		}
		p, ok := chi.Conn.(*pipe)
		if !ok || p.hs == nil || !slices.Contains(chi.SupportedVersions, tls.VersionTLS13) {
			return cfg, nil
		}
		per := cfg.Clone()
		per.KeyLogWriter = &keyLog{hs: p.hs, next: cfg.KeyLogWriter}
		return per, nil
	}
	return front
}

// keyLog receives crypto/tls's key log lines for one handshake. Its
// Write runs on the handshake goroutine.
type keyLog struct {
	hs   *handshake
	next io.Writer
}

func (k *keyLog) Write(line []byte) (int, error) {
	if k.next != nil {
		if _, err := k.next.Write(line); err != nil {
			return 0, err
		}
	}
	// "LABEL <client random hex> <secret hex>\n"
	f := bytes.Fields(line)
	if len(f) != 3 {
		return len(line), nil
	}
	var dst *[]byte
	switch string(f[0]) {
	case labelClientTraffic:
		dst = &k.hs.clientSecret
	case labelServerTraffic:
		dst = &k.hs.serverSecret
	default:
		return len(line), nil
	}
	secret := make([]byte, hex.DecodedLen(len(f[2])))
	if _, err := hex.Decode(secret, f[2]); err != nil {
		return len(line), nil // no secret: the connection stays on crypto/tls
	}
	k.hs.mu.Lock()
	*dst = secret
	k.hs.mu.Unlock()
	return len(line), nil
}

// watchWrite follows what crypto/tls sends during the handshake (whole
// records, see pipe.Write): the suite from the ServerHello, and which
// protected records are under the server's application traffic key, by
// opening them with it (they come after the ones under its handshake
// key). Anything unexpected rules the hand-over out. Handshake goroutine.
func (hs *handshake) watchWrite(b []byte) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	for len(b) > 0 && !hs.noHandover {
		if len(b) < recordHeaderLen {
			hs.noHandover = true
			return
		}
		n := recordHeaderLen + int(binary.BigEndian.Uint16(b[3:]))
		if n > len(b) {
			hs.noHandover = true
			return
		}
		rec := b[:n]
		b = b[n:]
		switch rec[0] {
		case recordHandshake:
			if s, ok := serverHelloSuite(rec[recordHeaderLen:]); ok {
				hs.suite = s
			}
		case recordApplicationData:
			if hs.out == nil {
				if hs.serverSecret == nil || !suiteSupported(hs.suite) {
					continue // under the handshake key
				}
				hs.out = &direction{}
				if err := hs.out.setSecret(hs.suite, hs.serverSecret); err != nil {
					hs.noHandover = true
					return
				}
			}
			scratch := make([]byte, 0, n)
			if _, err := hs.out.aead.Open(scratch, hs.out.nextNonce(), rec[recordHeaderLen:], rec[:recordHeaderLen]); err != nil {
				hs.out.seq--
				if hs.out.seq > 0 {
					hs.noHandover = true // a record under another key after one under this
				}
			}
		}
	}
}

// serverHelloSuite reads the cipher suite of a ServerHello (or
// HelloRetryRequest) record body.
func serverHelloSuite(body []byte) (uint16, bool) {
	// type(1) length(3) legacy_version(2) random(32) session_id<0..32>
	const sidAt = 4 + 2 + 32
	if len(body) <= sidAt || body[0] != 2 {
		return 0, false
	}
	at := sidAt + 1 + int(body[sidAt])
	if len(body) < at+2 {
		return 0, false
	}
	return binary.BigEndian.Uint16(body[at:]), true
}

// handover builds the record layer that takes the connection over from
// crypto/tls, or returns nil (the connection stays on crypto/tls): TLS
// 1.3, a suite the record layer implements, both secrets logged, every
// record crypto/tls sent accounted for, and crypto/tls holding no input
// (the handshake read whole records only, so it stopped at the client's
// Finished). Loop, after Handshake returned.
func (c *conn) handover(cs *tls.ConnectionState) *recordLayer {
	hs := c.hs
	hs.mu.Lock()
	defer hs.mu.Unlock()
	defer func() { // the secrets go with the record layer or not at all
		clear(hs.clientSecret)
		clear(hs.serverSecret)
		hs.clientSecret, hs.serverSecret, hs.out = nil, nil, nil
	}()
	if cs.Version != tls.VersionTLS13 || !suiteSupported(cs.CipherSuite) || hs.suite != cs.CipherSuite ||
		hs.noHandover || !hs.cut.atBoundary() || hs.clientSecret == nil || hs.serverSecret == nil {
		return nil
	}
	rl, err := newRecordLayer(cs.CipherSuite, hs.clientSecret, hs.serverSecret, hs.out)
	if err != nil {
		return nil
	}
	return rl
}
