package tlsloop

// A connection's traffic through the record layer (record.go): records
// opened from gnet's input straight into the plaintext buffer, records
// sealed into a pooled buffer handed to gnet's Write.

import (
	"encoding/binary"
	"errors"
	"log/slog"
)

// sealBufSize batches up to four full records per gnet Write.
const sealBufSize = 4 * maxSealedRecord

// errFailed: the record layer met a fatal error before; nothing more is
// read or written.
var errFailed = errors.New("tlsloop: TLS connection failed")

// openRecords opens whole records from the handshake's leftover or gnet's
// input into c.in until none is left or MaxPlaintext is held. A partial
// record waits in gnet's buffer. A non-nil error is fatal: the alert was
// sent and the connection is closing. Loop only.
func (c *conn) openRecords() error {
	if c.failed {
		return errFailed
	}
	for len(c.in) < c.e.cfg.MaxPlaintext {
		rec, err := c.peekRecord()
		if err != nil {
			return c.fatal(err)
		}
		if rec == nil {
			c.more = false
			return nil
		}
		if need := len(rec) - recordHeaderLen; cap(c.in)-len(c.in) < need {
			c.growFor(need)
		}
		base := len(c.in)
		c.used = usedAll
		out, typ, n, err := c.rl.in.open(c.in, rec)
		c.consumeRecord(len(rec))
		if err != nil {
			return c.fatal(err)
		}
		content := out[base : base+n]
		c.in = out[:base]
		switch typ {
		case recordApplicationData:
			c.in = out[:base+n]
		case recordAlert:
			err = c.readAlert(content)
		case recordHandshake:
			err = c.readHandshake(content)
		default: // change_cipher_spec or an unknown type, protected
			err = &alertError{alertUnexpectedMessage, "unexpected record type after the handshake"}
		}
		if err != nil {
			return c.fatal(err)
		}
	}
	return nil // over the limit: more stays set, the broker's next Peek goes on
}

// peekRecord returns the next whole record (header and body), nil if
// none is complete yet. Loop only.
func (c *conn) peekRecord() ([]byte, error) {
	if len(c.p.leftover) > 0 {
		// Ciphertext that came after the client's Finished, while the
		// handshake ran: read it first, with what gnet holds behind it.
		if c.Conn.InboundBuffered() > 0 {
			b, _ := c.Conn.Next(-1)
			c.p.leftover = append(c.p.leftover, b...)
		}
		b := c.p.leftover
		if len(b) < recordHeaderLen {
			return nil, nil
		}
		n := int(binary.BigEndian.Uint16(b[3:]))
		if n > maxCiphertextLen {
			return nil, &alertError{alertRecordOverflow, "record too long"}
		}
		if len(b) < recordHeaderLen+n {
			return nil, nil
		}
		return b[:recordHeaderLen+n], nil
	}
	hdr, err := c.Conn.Peek(recordHeaderLen)
	if err != nil {
		return nil, nil
	}
	n := int(binary.BigEndian.Uint16(hdr[3:]))
	if n > maxCiphertextLen {
		return nil, &alertError{alertRecordOverflow, "record too long"}
	}
	rec, err := c.Conn.Peek(recordHeaderLen + n)
	if err != nil {
		return nil, nil
	}
	return rec, nil
}

// consumeRecord drops the n bytes peekRecord returned. Loop only.
func (c *conn) consumeRecord(n int) {
	if len(c.p.leftover) > 0 {
		c.p.leftover = c.p.leftover[n:]
		if len(c.p.leftover) == 0 {
			c.p.leftover = nil
		}
		return
	}
	_, _ = c.Conn.Discard(n)
}

// readAlert handles an alert record (RFC 8446 §6): close_notify ends the
// input (answered with one), user_canceled is ignored, any other alert is
// fatal.
func (c *conn) readAlert(a []byte) error {
	if len(a) != 2 {
		return &alertError{alertDecodeError, "malformed alert"}
	}
	switch a[1] {
	case alertCloseNotify:
		_, _ = c.sealWrite(recordAlert, []byte{alertLevelWarning, alertCloseNotify}, nil)
		c.failed = true
		return errPeerClosed
	case alertUserCanceled:
		return nil
	}
	c.failed = true
	return errors.New("tlsloop: peer sent a fatal alert")
}

// readHandshake handles a post-handshake handshake record: only KeyUpdate
// is accepted (RFC 8446 §4.6.3), whole in its record and last in it (a
// key change ends a record, §5.1); anything else (NewSessionTicket,
// post-handshake authentication the server never asked for, a fragment)
// gets unexpected_message. Loop only.
func (c *conn) readHandshake(m []byte) error {
	if len(m) == 0 {
		return &alertError{alertUnexpectedMessage, "empty handshake record"}
	}
	if len(m) < 4 {
		return &alertError{alertUnexpectedMessage, "fragmented post-handshake message"}
	}
	n := int(m[1])<<16 | int(m[2])<<8 | int(m[3])
	if m[0] != handshakeKeyUpd {
		return &alertError{alertUnexpectedMessage, "post-handshake message refused"}
	}
	if n != 1 {
		return &alertError{alertDecodeError, "malformed KeyUpdate"}
	}
	if len(m) < keyUpdateMsgLen {
		return &alertError{alertUnexpectedMessage, "fragmented post-handshake message"}
	}
	if len(m) > keyUpdateMsgLen {
		return &alertError{alertUnexpectedMessage, "data after KeyUpdate in its record"}
	}
	req := m[4]
	if req != updateNotRequest && req != updateRequested {
		return &alertError{alertIllegalParameter, "bad KeyUpdate request"}
	}
	if err := c.rl.in.update(c.rl.suite()); err != nil {
		return &alertError{alertDecodeError, err.Error()}
	}
	if req == updateRequested {
		// Answered under the current key, then ours changes too.
		msg := [keyUpdateMsgLen]byte{handshakeKeyUpd, 0, 0, 1, updateNotRequest}
		if _, err := c.sealWrite(recordHandshake, msg[:], nil); err != nil {
			return err
		}
		if err := c.rl.out.update(c.rl.suite()); err != nil {
			return err
		}
	}
	return nil
}

// fatal ends the record layer: the alert err names (if any) goes out and
// the connection closes. It returns err.
func (c *conn) fatal(err error) error {
	c.more = false
	if c.failed {
		_ = c.Conn.Close()
		return err
	}
	var ae *alertError
	if errors.As(err, &ae) {
		_, _ = c.sealWrite(recordAlert, []byte{alertLevelFatal, ae.desc}, nil)
	}
	c.failed = true
	_ = c.Conn.Close() // gnet closes it on the loop, after what is queued was sent
	c.e.logHS.Log(c.e.cfg.Logger, slog.LevelInfo, "TLS connection failed",
		"remote", addrString(c.RemoteAddr()), "err", err)
	return err
}

// sealWrite protects b, then every slice of bs, as records of type typ
// (up to 16 KiB each, several slices sharing a record) and writes them to
// gnet, a few records per Write. It returns the plaintext length. Loop
// only.
func (c *conn) sealWrite(typ byte, b []byte, bs [][]byte) (int, error) {
	if c.failed && typ != recordAlert {
		return 0, errFailed
	}
	total := len(b)
	for _, x := range bs {
		total += len(x)
	}
	if total == 0 {
		return 0, nil
	}
	bp := c.e.sealBufs.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() { *bp = buf[:0]; c.e.sealBufs.Put(bp) }()
	out := &c.rl.out
	if err := out.build(); err != nil {
		return 0, err
	}
	c.used = usedAll
	src, i := b, 0
	for left := total; left > 0; {
		if out.seq >= keyUpdateAfter {
			// Rekey well before AES-GCM's per-key record limit (§5.5).
			if cap(buf)-len(buf) < 2*keyUpdateMsgLen+1+aeadTagLen {
				if err := c.flushSealed(&buf); err != nil {
					return 0, err
				}
			}
			msg := [keyUpdateMsgLen]byte{handshakeKeyUpd, 0, 0, 1, updateNotRequest}
			buf = out.seal(buf, recordHandshake, msg[:])
			if err := out.update(c.rl.suite()); err != nil {
				return 0, err
			}
		}
		chunk := min(left, maxPlaintextLen)
		if cap(buf)-len(buf) < recordHeaderLen+chunk+1+aeadTagLen {
			if err := c.flushSealed(&buf); err != nil {
				return 0, err
			}
		}
		hdr := len(buf)
		buf = append(buf, recordApplicationData, 3, 3, 0, 0)
		for need := chunk; need > 0; {
			if len(src) == 0 {
				src = bs[i]
				i++
				continue
			}
			m := min(need, len(src))
			buf = append(buf, src[:m]...)
			src = src[m:]
			need -= m
		}
		buf = out.sealAt(buf, hdr, typ)
		left -= chunk
	}
	if err := c.flushSealed(&buf); err != nil {
		return 0, err
	}
	return total, nil
}

// flushSealed hands the sealed records to gnet (which sends them or
// copies them into its output buffer) and empties buf.
func (c *conn) flushSealed(buf *[]byte) error {
	if len(*buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(*buf)
	*buf = (*buf)[:0]
	return err
}
