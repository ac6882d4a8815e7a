package tlsloop

// The TLS 1.3 record layer a connection uses once crypto/tls finished its
// handshake (see the package comment, "Record layer"): RFC 8446 §5 (record
// protection), §7.1 and §7.3 (HKDF-Expand-Label, traffic keys), §4.6.3
// (KeyUpdate), §6 (alerts). Only stdlib and x/crypto AEADs; no cipher
// code of its own.

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"hash"
	"slices"

	"golang.org/x/crypto/chacha20poly1305"
)

// Record types and sizes (RFC 8446 §5.1, §5.2).
const (
	recordChangeCipherSpec = 20
	recordAlert            = 21
	recordHandshake        = 22
	recordApplicationData  = 23

	recordHeaderLen  = 5
	maxPlaintextLen  = 1 << 14     // TLSInnerPlaintext.content
	maxCiphertextLen = 1<<14 + 256 // TLSCiphertext.length
	aeadTagLen       = 16          // every TLS 1.3 AEAD
	maxSealedRecord  = recordHeaderLen + maxPlaintextLen + 1 + aeadTagLen
	keyUpdateAfter   = 1 << 24 // records per write key, under AES-GCM's limit (§5.5)
	handshakeKeyUpd  = 24      // HandshakeType key_update
	keyUpdateMsgLen  = 4 + 1   // header + KeyUpdateRequest
	updateNotRequest = 0
	updateRequested  = 1
)

// Alert descriptions this layer sends or reads (RFC 8446 §6).
const (
	alertCloseNotify       = 0
	alertUnexpectedMessage = 10
	alertBadRecordMAC      = 20
	alertRecordOverflow    = 22
	alertIllegalParameter  = 47
	alertInternalError     = 80
	alertDecodeError       = 50
	alertUserCanceled      = 90
	alertLevelWarning      = 1
	alertLevelFatal        = 2
)

// alertError is a fatal condition: the alert to send, then close.
type alertError struct {
	desc byte
	msg  string
}

func (e *alertError) Error() string { return "tlsloop: " + e.msg }

// errPeerClosed: the peer sent close_notify (or a fatal alert): nothing
// more to read.
var errPeerClosed = errors.New("tlsloop: peer closed the TLS connection")

// suiteSupported reports whether the record layer implements suite.
func suiteSupported(suite uint16) bool {
	switch suite {
	case tls.TLS_AES_128_GCM_SHA256, tls.TLS_AES_256_GCM_SHA384, tls.TLS_CHACHA20_POLY1305_SHA256:
		return true
	}
	return false
}

func suiteHash(suite uint16) (func() hash.Hash, int) {
	if suite == tls.TLS_AES_256_GCM_SHA384 {
		return sha512.New384, sha512.Size384
	}
	return sha256.New, sha256.Size
}

func suiteKeyLen(suite uint16) int {
	if suite == tls.TLS_AES_128_GCM_SHA256 {
		return 16
	}
	return 32
}

// expandLabel is HKDF-Expand-Label with an empty context (RFC 8446 §7.1).
func expandLabel(h func() hash.Hash, secret []byte, label string, length int) ([]byte, error) {
	info := make([]byte, 0, 4+6+len(label))
	info = binary.BigEndian.AppendUint16(info, uint16(length))
	info = append(info, byte(6+len(label)))
	info = append(info, "tls13 "...)
	info = append(info, label...)
	info = append(info, 0) // context: empty
	return hkdf.Expand(h, secret, string(info), length)
}

// direction is one direction's traffic protection: the current traffic
// secret, its static IV and record sequence number, and the AEAD built
// from its key. The AEAD (~770 B of key schedule and tables for AES-GCM)
// is dropped while the connection idles (idle.go) and built again by use;
// the key is not kept but derived again from the secret then (one
// HKDF-Expand, rare next to records), so that a record layer fits 208
// bytes (BenchmarkTLSIdleConnHeap).
type direction struct {
	aead   cipher.AEAD // nil: not built (idle)
	suite  uint16
	iv     [12]byte
	nonce  [12]byte // scratch: iv XOR seq, kept here so no record allocates
	seq    uint64
	secret [48]byte // the current traffic secret: key (§7.3) and KeyUpdate (§7.2)
}

// build makes the AEAD from the secret's key, if it is not built.
func (d *direction) build() error {
	if d.aead != nil {
		return nil
	}
	h, hl := suiteHash(d.suite)
	key, err := expandLabel(h, d.secret[:hl], "key", suiteKeyLen(d.suite))
	if err != nil {
		return err
	}
	defer clear(key)
	if d.suite == tls.TLS_CHACHA20_POLY1305_SHA256 {
		d.aead, err = chacha20poly1305.New(key)
		return err
	}
	b, err := aes.NewCipher(key)
	if err == nil {
		d.aead, err = cipher.NewGCM(b)
	}
	return err
}

// setSecret installs a traffic secret: its IV (RFC 8446 §7.3), seq 0, and
// the AEAD from its key (build).
func (d *direction) setSecret(suite uint16, secret []byte) error {
	h, hl := suiteHash(suite)
	if len(secret) != hl {
		return errors.New("tlsloop: traffic secret of the wrong length")
	}
	iv, err := expandLabel(h, secret, "iv", 12)
	if err != nil {
		return err
	}
	d.aead, d.suite, d.seq = nil, suite, 0
	copy(d.iv[:], iv)
	copy(d.secret[:], secret)
	return d.build()
}

// update moves to the next traffic secret (RFC 8446 §7.2).
func (d *direction) update(suite uint16) error {
	h, hl := suiteHash(suite)
	next, err := expandLabel(h, d.secret[:hl], "traffic upd", hl)
	if err != nil {
		return err
	}
	err = d.setSecret(suite, next)
	clear(next)
	return err
}

// nextNonce returns the per-record nonce (iv XOR seq, §5.3) and advances
// seq. The nonce lives in d: valid until the next call.
func (d *direction) nextNonce() []byte {
	d.nonce = d.iv
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], d.seq)
	for i := range s {
		d.nonce[4+i] ^= s[i]
	}
	d.seq++
	return d.nonce[:]
}

// recordLayer is a handed-over connection's TLS 1.3 protection: in is the
// client's traffic, out the server's.
type recordLayer struct {
	in, out direction // of the same suite
}

// suite is the negotiated cipher suite.
func (rl *recordLayer) suite() uint16 { return rl.in.suite }

// newRecordLayer derives both directions from the application traffic
// secrets. out, when not nil, is the server's direction already built
// from serverSecret for counting the records crypto/tls sent under it (its
// NewSessionTicket: watchWrite), taken over as it is, sequence number
// included, instead of being derived again.
func newRecordLayer(suite uint16, clientSecret, serverSecret []byte, out *direction) (*recordLayer, error) {
	if !suiteSupported(suite) {
		return nil, errors.New("tlsloop: cipher suite not supported by the record layer")
	}
	rl := &recordLayer{}
	if err := rl.in.setSecret(suite, clientSecret); err != nil {
		return nil, err
	}
	if out != nil && out.suite == suite {
		rl.out = *out
		return rl, nil
	}
	if err := rl.out.setSecret(suite, serverSecret); err != nil {
		return nil, err
	}
	return rl, nil
}

// seal appends one protected record carrying content of type typ
// (len(content) ≤ maxPlaintextLen) to dst; the AEAD must be built. dst's spare capacity should
// hold len(content)+22 bytes, or append allocates.
func (d *direction) seal(dst []byte, typ byte, content []byte) []byte {
	hdr := len(dst)
	dst = append(dst, recordApplicationData, 3, 3, 0, 0)
	dst = append(dst, content...)
	return d.sealAt(dst, hdr, typ)
}

// sealAt protects the record that starts at dst[hdr]: a header whose
// length is filled in here, then the content up to len(dst). It appends
// the type byte and the tag (in place: dst's spare capacity should hold
// 17 bytes) and returns dst with the record sealed.
func (d *direction) sealAt(dst []byte, hdr int, typ byte) []byte {
	dst = slices.Grow(append(dst, typ), aeadTagLen) // no-op when the caller left room
	body := dst[hdr+recordHeaderLen:]
	n := len(body) + aeadTagLen
	dst[hdr+3], dst[hdr+4] = byte(n>>8), byte(n)
	sealed := d.aead.Seal(body[:0], d.nextNonce(), body, dst[hdr:hdr+recordHeaderLen])
	return dst[:hdr+recordHeaderLen+len(sealed)]
}

// open decrypts the record rec (header and body, whole) and appends the
// inner plaintext (content, type byte and padding) to dst; it returns
// dst, the content type and the content length past len(dst).
func (d *direction) open(dst, rec []byte) ([]byte, byte, int, error) {
	if rec[0] != recordApplicationData {
		// An unprotected record after the handshake, including a
		// change_cipher_spec (RFC 8446 §5).
		return dst, 0, 0, &alertError{alertUnexpectedMessage, "unprotected record after the handshake"}
	}
	if len(rec)-recordHeaderLen > maxCiphertextLen {
		return dst, 0, 0, &alertError{alertRecordOverflow, "record too long"}
	}
	if err := d.build(); err != nil {
		return dst, 0, 0, &alertError{alertInternalError, err.Error()}
	}
	start := len(dst)
	out, err := d.aead.Open(dst, d.nextNonce(), rec[recordHeaderLen:], rec[:recordHeaderLen])
	if err != nil {
		return dst, 0, 0, &alertError{alertBadRecordMAC, "record authentication failed"}
	}
	// TLSInnerPlaintext: content, type, zero padding (§5.2, §5.4).
	i := len(out) - 1
	for i >= start && out[i] == 0 {
		i--
	}
	if i < start {
		return dst, 0, 0, &alertError{alertUnexpectedMessage, "record without a content type"}
	}
	if i-start > maxPlaintextLen {
		return dst, 0, 0, &alertError{alertRecordOverflow, "record plaintext too long"}
	}
	return out, out[i], i - start, nil
}

// cutter follows a stream of TLS records through their 5-byte headers, so
// that a reader can stop exactly at a record's end.
type cutter struct {
	hdr  [recordHeaderLen]byte
	hdrN int // header bytes seen of the current record
	left int // body bytes still to come, once the header is complete
}

// take returns how many of the n available bytes belong to the current
// record (at least one if n > 0) and advances over them; b holds them.
func (k *cutter) take(b []byte) int {
	n := 0
	for n < len(b) {
		if k.hdrN < recordHeaderLen {
			k.hdr[k.hdrN] = b[n]
			k.hdrN++
			n++
			if k.hdrN == recordHeaderLen {
				k.left = int(binary.BigEndian.Uint16(k.hdr[3:]))
				if k.left == 0 {
					k.hdrN = 0
					return n
				}
			}
			continue
		}
		m := min(k.left, len(b)-n)
		n += m
		k.left -= m
		if k.left == 0 {
			k.hdrN = 0
			return n
		}
	}
	return n
}

// atBoundary: no record started and unfinished.
func (k *cutter) atBoundary() bool { return k.hdrN == 0 }
