package stdnet

// permessage-deflate (RFC 7692) with klauspost/compress, in its
// bounded-memory form. gorilla/websocket negotiates it in the handshake
// (Upgrader.EnableCompression answers any offer with
// "permessage-deflate; server_no_context_takeover;
// client_no_context_takeover", the form we want) but compresses with the
// standard library and keeps per-connection flate state around; so once
// it has negotiated, the connection is framed here instead, on the
// hijacked socket (RFC 6455 §5):
//
//   - outgoing messages of at least wsCompressMin bytes are compressed by
//     flate.StatelessDeflate: no compressor state exists between messages
//     (server_no_context_takeover), and the empty stored block it ends
//     with is the 0x00 0x00 0xff 0xff tail §7.2.1 says to remove;
//   - incoming messages with RSV1 set are inflated by a pooled reader,
//     reset per message (client_no_context_takeover), held only while a
//     message is read: an idle connection holds no window.
//
// Inflated bytes are never collected: the stream is read as the broker
// reads MQTT, so a small message that inflates to a huge one meets the
// broker's packet size limit like any other stream.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/klauspost/compress/flate"
)

// offersDeflate reports whether the upgrade request offers
// permessage-deflate: the same test as gorilla's, so the framing here is
// used exactly when gorilla's handshake answer accepted it.
func offersDeflate(r *http.Request) bool {
	for _, v := range r.Header.Values("Sec-WebSocket-Extensions") {
		for _, ext := range strings.Split(v, ",") {
			name, _, _ := strings.Cut(ext, ";")
			if strings.EqualFold(strings.TrimSpace(name), "permessage-deflate") {
				return true
			}
		}
	}
	return false
}

// WebSocket opcodes and frame bits (RFC 6455 §5.2), for this package's
// permessage-deflate framing and for server/wsloop's: one definition.
const (
	WSOpContinuation = 0x0  // continuation frame
	WSOpText         = 0x1  // text frame (MQTT refuses it [MQTT-6.0.0-1])
	WSOpBinary       = 0x2  // binary frame: MQTT's
	WSOpClose        = 0x8  // close control frame
	WSOpPing         = 0x9  // ping control frame
	WSOpPong         = 0xA  // pong control frame
	WSBitFin         = 0x80 // first header byte: last frame of a message
	WSBitRSV1        = 0x40 // first header byte: compressed message (RFC 7692)
	WSBitsRSV23      = 0x30 // first header byte: reserved, must be 0
	WSBitMask        = 0x80 // second header byte: payload masked
	WSMaxControl     = 125  // largest control frame payload (§5.5)
)

// deflateTail ends a message's compressed bytes for the inflater: the
// sync marker removed by the sender, then a final empty stored block so
// the reader returns io.EOF at the message's end (RFC 7692 §7.2.2).
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

var inflaters sync.Pool // io.ReadCloser from flate.NewReader, reset per message

// deflateStream is a WebSocket connection with permessage-deflate, framed
// here (see the file comment); it is the net.Conn the transport reads
// MQTT from, like wsStream.
//
// Concurrency: Read and SetReadDeadline belong to the reader goroutine;
// Write, SetWriteDeadline and closeFrame to the writer goroutine. Frame
// writes, including the pongs and close replies the reader sends, are
// serialised by wmu.
type deflateStream struct {
	raw   net.Conn // the hijacked connection (*tls.Conn for wss://)
	br    *bufio.Reader
	limit int64 // largest message, inflated (gorilla's read limit on the other path)
	read  int64 // bytes of the current message so far

	// Reader state: the message being read.
	msg      io.Reader     // nil between messages
	inflater io.ReadCloser // held while msg is compressed
	frame    frameReader
	src      inflateSource // what the inflater reads: the frames, then deflateTail

	wmu       sync.Mutex
	wbuf      []byte // header and payload of the frame being written
	cbuf      bytes.Buffer
	closeSent bool
}

// frameReader reads one message's payload across its frames, answering
// control frames between them.
type frameReader struct {
	s         *deflateStream
	remaining uint64 // payload bytes left in the current frame
	mask      [4]byte
	pos       int  // position in the mask
	final     bool // the current frame is the message's last
}

func newDeflateStream(raw net.Conn, limit int64) *deflateStream {
	s := &deflateStream{raw: raw, br: bufio.NewReaderSize(raw, 4096), limit: limit}
	s.frame.s = s
	return s
}

var (
	errWSProtocol = errors.New("websocket: protocol error")
	errWSTooBig   = errors.New("websocket: message larger than the read limit")
)

// Read returns the next bytes of the MQTT stream: the (inflated) payloads
// of binary messages in order.
func (s *deflateStream) Read(p []byte) (int, error) {
	for {
		if s.msg == nil {
			if err := s.nextMessage(); err != nil {
				return 0, err
			}
		}
		n, err := s.msg.Read(p)
		if s.read += int64(n); s.read > s.limit {
			// One message holds at most one packet from a well-behaved
			// client: as on gorilla's path, 1009.
			s.fail(websocket.CloseMessageTooBig, "")
			return 0, errWSTooBig
		}
		if err == io.EOF {
			s.endMessage()
			if n > 0 {
				return n, nil
			}
			continue
		}
		var corrupt flate.CorruptInputError
		if s.inflater != nil && errors.As(err, &corrupt) {
			// Corrupt deflate data is the peer's error, not the network's.
			s.fail(websocket.CloseInvalidFramePayloadData, "bad deflate data")
			return n, fmt.Errorf("websocket: inflate: %w", err)
		}
		return n, err
	}
}

// nextMessage reads frames up to the first data frame of a message.
func (s *deflateStream) nextMessage() error {
	op, rsv1, err := s.frame.next(true)
	if err != nil {
		return err
	}
	if op != WSOpBinary {
		// MQTT is carried in binary frames only [MQTT-6.0.0-1].
		s.fail(websocket.CloseUnsupportedData, "MQTT needs binary frames")
		return errTextFrame
	}
	s.msg = &s.frame
	if rsv1 {
		z, _ := inflaters.Get().(io.ReadCloser)
		s.src = inflateSource{f: &s.frame}
		if z == nil {
			z = flate.NewReader(&s.src)
		} else if err := z.(flate.Resetter).Reset(&s.src, nil); err != nil {
			return err
		}
		s.inflater, s.msg = z, z
	}
	return nil
}

// endMessage returns the inflater of a finished message to the pool.
func (s *deflateStream) endMessage() {
	if s.inflater != nil {
		inflaters.Put(s.inflater)
		s.inflater = nil
	}
	s.msg, s.read = nil, 0
}

// inflateSource is a compressed message's bytes for the inflater: the
// frames' payload, then deflateTail (an io.MultiReader without its
// allocations).
type inflateSource struct {
	f    *frameReader
	tail int // bytes of deflateTail already read (once f is done)
}

func (r *inflateSource) Read(p []byte) (int, error) {
	if r.tail == 0 && r.f != nil {
		n, err := r.f.Read(p)
		if err != io.EOF {
			return n, err
		}
		r.f = nil
		if n > 0 {
			return n, nil
		}
	}
	if r.tail == len(deflateTail) {
		return 0, io.EOF
	}
	n := copy(p, deflateTail[r.tail:])
	r.tail += n
	return n, nil
}

// Read returns payload bytes of the current message, unmasked; io.EOF at
// its end.
func (f *frameReader) Read(p []byte) (int, error) {
	for f.remaining == 0 {
		if f.final {
			return 0, io.EOF
		}
		if _, _, err := f.next(false); err != nil {
			return 0, err
		}
	}
	if uint64(len(p)) > f.remaining {
		p = p[:f.remaining]
	}
	n, err := f.s.br.Read(p)
	for i := range n {
		p[i] ^= f.mask[f.pos&3]
		f.pos++
	}
	f.remaining -= uint64(n)
	if err == io.EOF && f.remaining > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// next reads frame headers until a data frame: the first of a message
// (first) or its next fragment, answering control frames on the way. It
// returns the data frame's opcode and RSV1 bit.
func (f *frameReader) next(first bool) (op byte, rsv1 bool, err error) {
	s := f.s
	for {
		var h [2]byte
		if _, err := io.ReadFull(s.br, h[:]); err != nil {
			return 0, false, err
		}
		fin := h[0]&WSBitFin != 0
		op, rsv1 = h[0]&0x0F, h[0]&WSBitRSV1 != 0
		length := uint64(h[1] & 0x7F)
		switch length {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(s.br, b[:]); err != nil {
				return 0, false, err
			}
			length = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(s.br, b[:]); err != nil {
				return 0, false, err
			}
			length = binary.BigEndian.Uint64(b[:])
			if length>>63 != 0 {
				return 0, false, s.protocolError("frame length has its top bit set")
			}
		}
		if h[1]&WSBitMask == 0 { // a client masks every frame (RFC 6455 §5.1)
			return 0, false, s.protocolError("unmasked client frame")
		}
		if h[0]&WSBitsRSV23 != 0 {
			return 0, false, s.protocolError("reserved bits set")
		}
		var mask [4]byte
		if _, err := io.ReadFull(s.br, mask[:]); err != nil {
			return 0, false, err
		}
		if op >= WSOpClose { // control frame: short, whole, never compressed
			if !fin || length > WSMaxControl || rsv1 {
				return 0, false, s.protocolError("bad control frame")
			}
			payload := make([]byte, length)
			if _, err := io.ReadFull(s.br, payload); err != nil {
				return 0, false, err
			}
			for i := range payload {
				payload[i] ^= mask[i&3]
			}
			if err := s.control(op, payload); err != nil {
				return 0, false, err
			}
			continue
		}
		switch {
		case first && op == WSOpContinuation, !first && op != WSOpContinuation:
			return 0, false, s.protocolError("unexpected continuation or interleaved message")
		case !first && rsv1: // RSV1 marks the first frame of a compressed message only
			return 0, false, s.protocolError("RSV1 on a continuation frame")
		case op != WSOpBinary && op != WSOpText && op != WSOpContinuation:
			return 0, false, s.protocolError("unknown opcode")
		}
		f.remaining, f.mask, f.pos, f.final = length, mask, 0, fin
		return op, rsv1, nil
	}
}

// control answers a ping with a pong and a close with a close (if none was
// sent yet), RFC 6455 §5.5; a pong is ignored.
func (s *deflateStream) control(op byte, payload []byte) error {
	switch op {
	case WSOpPing:
		return s.writeFrame(WSOpPong, false, payload, time.Now().Add(lingerTimeout))
	case WSOpClose:
		// The same error gorilla's path reports, so OnClose sees the
		// peer's close the same way on both.
		ce := &websocket.CloseError{Code: websocket.CloseNoStatusReceived}
		switch {
		case len(payload) == 1, len(payload) >= 2 && !utf8.Valid(payload[2:]):
			ce.Code = websocket.CloseProtocolError // §5.5.1: a code, then UTF-8 text
		case len(payload) >= 2:
			ce.Code, ce.Text = int(binary.BigEndian.Uint16(payload)), string(payload[2:])
		}
		reply := websocket.CloseNormalClosure
		if ce.Code == websocket.CloseProtocolError {
			reply = ce.Code
		}
		_ = s.closeFrame(reply, "", time.Now().Add(lingerTimeout))
		return ce
	case WSOpPong:
		return nil
	}
	return s.protocolError("unknown control opcode")
}

// protocolError closes with 1002 and returns the error the reader reports.
func (s *deflateStream) protocolError(why string) error {
	s.fail(websocket.CloseProtocolError, why)
	return fmt.Errorf("%w: %s", errWSProtocol, why)
}

// fail sends a close frame with code (reader side; best effort).
func (s *deflateStream) fail(code int, reason string) {
	_ = s.closeFrame(code, reason, time.Now().Add(time.Second))
}

// Write sends p as one binary message, compressed from wsCompressMin bytes.
func (s *deflateStream) Write(p []byte) (int, error) {
	if err := s.writeFrame(WSOpBinary, len(p) >= wsCompressMin, p, time.Time{}); err != nil {
		return 0, err
	}
	return len(p), nil
}

// writeFrame writes one unmasked, final frame (RFC 6455 §5.1: a server
// never masks). A zero deadline keeps the connection's write deadline.
func (s *deflateStream) writeFrame(op byte, compress bool, payload []byte, deadline time.Time) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closeSent {
		return net.ErrClosed
	}
	if op == WSOpClose {
		s.closeSent = true
	}
	if compress {
		s.cbuf.Reset()
		if err := flate.StatelessDeflate(&s.cbuf, payload, false, nil); err != nil {
			return err
		}
		payload = bytes.TrimSuffix(s.cbuf.Bytes(), deflateTail[:4])
	}
	b := append(s.wbuf[:0], WSBitFin|op)
	if compress {
		b[0] |= WSBitRSV1
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, payload...)
	if !deadline.IsZero() {
		_ = s.raw.SetWriteDeadline(deadline)
	}
	_, err := s.raw.Write(b)
	s.wbuf = b
	if cap(s.wbuf) > keepWriteBuffer { // a burst's buffer is given back
		s.wbuf = nil
	}
	if s.cbuf.Cap() > keepWriteBuffer {
		s.cbuf = bytes.Buffer{}
	}
	return err
}

// closeFrame starts (or answers) the closing handshake (RFC 6455 §5.5.1).
func (s *deflateStream) closeFrame(code int, reason string, deadline time.Time) error {
	if len(reason) > WSMaxControl-2 {
		reason = reason[:WSMaxControl-2]
	}
	payload := binary.BigEndian.AppendUint16(nil, uint16(code))
	return s.writeFrame(WSOpClose, false, append(payload, reason...), deadline)
}

func (s *deflateStream) Close() error                       { return s.raw.Close() }
func (s *deflateStream) LocalAddr() net.Addr                { return s.raw.LocalAddr() }
func (s *deflateStream) RemoteAddr() net.Addr               { return s.raw.RemoteAddr() }
func (s *deflateStream) SetReadDeadline(t time.Time) error  { return s.raw.SetReadDeadline(t) }
func (s *deflateStream) SetWriteDeadline(t time.Time) error { return s.raw.SetWriteDeadline(t) }
func (s *deflateStream) SetDeadline(t time.Time) error      { return s.raw.SetDeadline(t) }
