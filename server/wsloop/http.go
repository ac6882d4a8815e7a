package wsloop

// The HTTP/1.1 upgrade (RFC 6455 §4.2) on the loop. A request is parsed
// only once its header has fully arrived (the bytes wait in gnet's buffer
// meanwhile, bounded per connection by MaxHeaderBytes and for all
// connections together by MaxHeaderBytesTotal), by net/http's own parser:
// an upgrade happens once per connection, so its allocations do not
// matter, and a mature parser does. Answers follow server/stdnet's: 404
// for another path, 426 for a request that is not an upgrade, 403 for a
// cross-origin one, 400 without the "mqtt" subprotocol. Keep-alive is
// honoured after a refusal (the idle timeout then runs); a request with a
// body is answered and closed.

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/panjf2000/gnet/v2"
)

var headerEnd = []byte("\r\n\r\n")

// wsGUID is the key suffix of Sec-WebSocket-Accept (RFC 6455 §1.3).
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// holdHeader sets how many bytes of an incomplete request header this
// connection holds, in the engine-wide count; false once that count would
// pass MaxHeaderBytesTotal.
func (c *conn) holdHeader(n int) bool {
	d := int64(n) - int64(c.held)
	if d > 0 && c.e.headerHeld.Add(d) > c.e.cfg.MaxHeaderBytesTotal {
		c.e.headerHeld.Add(-d)
		return false
	}
	if d < 0 {
		c.e.headerHeld.Add(d)
	}
	c.held = int32(n)
	return true
}

// readHTTP reads requests until one upgrades the connection, none is
// complete, or the connection must close. Loop only.
func (c *conn) readHTTP() gnet.Action {
	for c.state == stateHTTP {
		avail := c.Conn.InboundBuffered()
		if avail == 0 {
			return gnet.None
		}
		if c.idle { // the next request started: the header timeout runs again
			c.idle = false
			c.armTimer(c.l.headerTimeout)
		}
		buf, _ := c.Conn.Peek(min(avail, c.l.maxHeader+len(headerEnd)))
		end := bytes.Index(buf, headerEnd)
		if end < 0 {
			if len(buf) > c.l.maxHeader {
				c.e.badReq.Add(1)
				c.refuse(LimitHeader, "request header over max_header_bytes "+strconv.Itoa(c.l.maxHeader))
				return c.respond(http.StatusRequestHeaderFieldsTooLarge, "431 request header too large", nil, true)
			}
			if !c.holdHeader(len(buf)) {
				c.e.badReq.Add(1)
				c.refuse(LimitHeader, "incomplete request headers of all connections over their total cap")
				return c.respond(http.StatusRequestHeaderFieldsTooLarge, "431 server busy with incomplete requests", nil, true)
			}
			return gnet.None
		}
		c.holdHeader(0)
		n := end + len(headerEnd)
		req, err := http.ReadRequest(bufio.NewReaderSize(bytes.NewReader(buf[:n]), n+16))
		_, _ = c.Conn.Discard(n)
		if err != nil {
			c.e.badReq.Add(1)
			return c.respond(http.StatusBadRequest, "400 malformed HTTP request", nil, true)
		}
		if act := c.serveRequest(req); act != gnet.None {
			return act
		}
	}
	return gnet.None
}

// serveRequest answers one request, upgrading the connection if it is a
// valid MQTT WebSocket request.
func (c *conn) serveRequest(r *http.Request) gnet.Action {
	e, l := c.e, c.l
	// A body we do not read would be taken for the next request.
	closeAfter := r.Close || r.ContentLength != 0 || len(r.TransferEncoding) > 0
	if !slices.Contains(l.paths, r.URL.Path) {
		e.notFound.Add(1)
		e.logPath.Log(e.cfg.Logger, slog.LevelInfo, "WebSocket request for an unknown path", "remote", c.RemoteAddr().String(),
			"path", clip(r.URL.Path), "want", strings.Join(l.paths, " "))
		return c.respond(http.StatusNotFound, "404 not found", nil, closeAfter)
	}
	if r.Method != http.MethodGet || !headerHas(r.Header, "Connection", "upgrade") || !headerHas(r.Header, "Upgrade", "websocket") {
		e.badReq.Add(1)
		return c.respond(http.StatusUpgradeRequired, "426 this is an MQTT over WebSocket endpoint: connect with a WebSocket client",
			[]string{"Upgrade: websocket"}, closeAfter)
	}
	if !l.spec.OriginAllowed(r) {
		e.origin.Add(1)
		e.logOrigin.Log(e.cfg.Logger, slog.LevelWarn, "WebSocket upgrade refused: cross-origin request (add the origin to the listener's allowed origins if it is yours)",
			"remote", c.RemoteAddr().String(), "origin", clip(r.Header.Get("Origin")), "host", clip(r.Host))
		return c.respond(http.StatusForbidden, "403 cross-origin WebSocket request refused", nil, closeAfter)
	}
	proto := subprotocol(r.Header)
	if proto == "" { // [MQTT-6.0.0-3]
		e.badReq.Add(1)
		return c.respond(http.StatusBadRequest, "400 MQTT over WebSocket needs Sec-WebSocket-Protocol: mqtt", nil, closeAfter)
	}
	if r.Header.Get("Sec-WebSocket-Version") != "13" {
		e.badReq.Add(1)
		return c.respond(http.StatusBadRequest, "400 unsupported WebSocket version",
			[]string{"Sec-WebSocket-Version: 13"}, closeAfter)
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	if k, err := base64.StdEncoding.DecodeString(key); err != nil || len(k) != 16 {
		e.badReq.Add(1)
		return c.respond(http.StatusBadRequest, "400 bad Sec-WebSocket-Key", nil, closeAfter)
	}
	if closeAfter && !r.Close {
		e.badReq.Add(1)
		return c.respond(http.StatusBadRequest, "400 an upgrade request has no body", nil, true)
	}
	h := sha1.Sum([]byte(key + wsGUID))
	var b strings.Builder
	b.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ")
	b.WriteString(base64.StdEncoding.EncodeToString(h[:]))
	b.WriteString("\r\nSec-WebSocket-Protocol: ")
	b.WriteString(proto) // "mqtt" whenever offered [MQTT-6.0.0-4]
	if l.spec.Compression && acceptDeflate(r.Header.Values("Sec-WebSocket-Extensions")) {
		c.deflate = true
		b.WriteString("\r\nSec-WebSocket-Extensions: " + deflateAnswer)
	}
	b.WriteString("\r\n\r\n")
	if _, err := c.Conn.Write([]byte(b.String())); err != nil {
		return gnet.Close
	}
	c.stopTimer()
	c.state = stateOpen
	e.open.Add(1)
	e.upgrades.Add(1)
	return gnet.None
}

// respond writes a short plain-text answer; closeAfter closes the
// connection once it is out, else keep-alive goes on with the idle timer.
func (c *conn) respond(status int, body string, extra []string, closeAfter bool) gnet.Action {
	var b strings.Builder
	b.WriteString("HTTP/1.1 ")
	b.WriteString(strconv.Itoa(status))
	b.WriteString(" ")
	b.WriteString(http.StatusText(status))
	b.WriteString("\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n")
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	if closeAfter {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("Content-Length: " + strconv.Itoa(len(body)+1) + "\r\n\r\n" + body + "\n")
	_, _ = c.Conn.Write([]byte(b.String()))
	if closeAfter {
		c.holdHeader(0)
		c.state = stateClosed // no close frame: it never was a WebSocket
		return gnet.Close
	}
	c.idle = true
	c.armTimer(c.l.idleTimeout)
	return gnet.None
}

// headerHas reports whether a comma-separated header lists token
// (case-insensitively).
func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// subprotocol picks the answer to Sec-WebSocket-Protocol: "mqtt" if
// offered [MQTT-6.0.0-4], else "mqttv3.1" (older clients), else "".
func subprotocol(h http.Header) string {
	switch {
	case headerHas(h, "Sec-WebSocket-Protocol", "mqtt"):
		return "mqtt"
	case headerHas(h, "Sec-WebSocket-Protocol", "mqttv3.1"):
		return "mqttv3.1"
	}
	return ""
}

// clip bounds a client-chosen string before it goes into a log line.
func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
