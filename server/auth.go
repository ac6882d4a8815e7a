package server

import (
	"github.com/panjf2000/gnet/v2"

	"github.com/ternmq/tern/codec"
	"github.com/ternmq/tern/server/auth"
)

// Enhanced authentication (MQTT 5.0 §4.12) is a challenge/response
// conversation carried in AUTH packets, named by an Authentication Method:
//
//	client                                   broker
//	CONNECT  method=M data=d0        ──▶     Start, Step(d0) → s1, not done
//	                                 ◀──     AUTH 0x18 (continue) data=s1
//	AUTH 0x18 method=M data=d1       ──▶     Step(d1) → s2, done
//	                                 ◀──     CONNACK 0x00 method=M data=s2
//
// A method the broker does not implement is CONNACK 0x8C
// [MQTT-4.12.0-1]; a failed step is CONNACK 0x87 (or the code of a
// *codec.Error). While the exchange runs the client may send only AUTH or
// DISCONNECT; the connect timeout still applies. Once connected, the client
// may re-authenticate with AUTH 0x19 and the same method [MQTT-4.12.1-1]:
// the same conversation, ending in AUTH 0x00 (success) or DISCONNECT
// (failure [MQTT-4.12.1-2]); other traffic goes on meanwhile.
//
// Steps run on the connection's event loop and must not block. A method
// is one EnhancedAuthenticator in Options.EnhancedAuth; SCRAM-SHA-256
// (auth.NewSCRAMSHA256) is built in.

// EnhancedAuthenticator implements one Authentication Method; see
// auth.EnhancedAuthenticator.
type EnhancedAuthenticator = auth.EnhancedAuthenticator

// AuthExchange is one authentication conversation; see auth.Exchange.
type AuthExchange = auth.Exchange

// IdentifiedExchange is an AuthExchange that names the user it
// authenticated; see auth.IdentifiedExchange.
type IdentifiedExchange = auth.IdentifiedExchange

// authState is a connection's enhanced authentication state.
type authState struct {
	method string
	authr  EnhancedAuthenticator
	ex     AuthExchange // conversation in progress (CONNECT or re-auth); nil if none
	done   bool         // the CONNECT exchange succeeded
	final  []byte       // server data for the CONNACK (owned copy)
	// identity is who the CONNECT's exchange authenticated, if it is an
	// IdentifiedExchange: the client's user name from then on.
	identity string

	// The CONNECT being authenticated, copied out of the read buffer and
	// decoded again once the exchange succeeds; nil when none is pending.
	pending  []byte
	pendingH codec.FixedHeader
}

// findAuth returns the authenticator of method, or nil.
func (s *Server) findAuth(method []byte) EnhancedAuthenticator {
	for _, a := range s.opts.EnhancedAuth {
		if a.Method() == string(method) {
			return a
		}
	}
	return nil
}

// exchangeIdentity is the user an exchange that just succeeded
// authenticated, or "" if it does not say.
func exchangeIdentity(ex AuthExchange) string {
	if ie, ok := ex.(IdentifiedExchange); ok {
		return ie.Identity()
	}
	return ""
}

// identity is the user name the client is known by for the Authorizer and
// session ownership: the one its AUTH exchange established, else the
// CONNECT User Name (which the Authenticator then verifies, or which is
// dropped for an anonymous client). Identity comes from authentication
// only: a SCRAM client with an empty CONNECT User Name is its SCRAM user,
// not anonymous.
func (c *client) identity(p *codec.Connect) string {
	if c.enhancedAuthed() && c.v5.auth.identity != "" {
		return c.v5.auth.identity
	}
	return string(p.Username)
}

// certIdentified is a connection whose TLS client certificate may name
// the client (server/stdnet's connections on a listener with
// IdentityFrom).
type certIdentified interface{ CertIdentity() string }

// certIdentity is the identity c's verified client certificate carries,
// or "" (plain TCP, no certificate, or the listener takes no identity
// from certificates).
func certIdentity(c gnet.Conn) string {
	if ci, ok := c.(certIdentified); ok {
		return ci.CertIdentity()
	}
	return ""
}

// authReason is the reason code a failed authentication is reported
// with: the code of a *codec.Error (e.g. 0x8A Banned while locked out,
// auth.ErrLockedOut), else def.
func authReason(err error, def codec.ReasonCode) codec.ReasonCode { return codec.CodeOf(err, def) }

// authRefusal is the reason code a CONNECT the Authenticator failed is
// refused with.
func authRefusal(err error) codec.ReasonCode { return authReason(err, codec.BadUsernameOrPassword) }

// authCode is the reason code a failed AUTH exchange step is reported with.
func authCode(err error) codec.ReasonCode { return authReason(err, codec.NotAuthorized) }

// startConnectAuth begins the exchange a 5.0 CONNECT asked for.
func (c *client) startConnectAuth(h codec.FixedHeader, body []byte, p *codec.Connect) gnet.Action {
	if c.v5.auth == nil {
		c.v5.auth = &authState{}
	}
	a := c.v5.auth
	authr := c.loop.srv.findAuth(p.Props.AuthMethod)
	if authr == nil {
		return c.refuse(codec.Version5, codec.BadAuthenticationMethod, "authentication method "+string(p.Props.AuthMethod)+" not supported [MQTT-4.12.0-1]")
	}
	a.method, a.authr = string(p.Props.AuthMethod), authr
	a.ex = authr.Start(c.connectInfo(p.Password))
	out, done, err := a.ex.Step(p.Props.AuthData)
	if err != nil {
		a.ex = nil
		return c.refuse(codec.Version5, authCode(err), "authentication failed: "+err.Error())
	}
	if done {
		a.identity = exchangeIdentity(a.ex)
		a.ex, a.done, a.final = nil, true, append([]byte(nil), out...)
		return c.handleConnect(h, body) // again, now authenticated
	}
	a.pending, a.pendingH = append([]byte(nil), body...), h
	c.sendAuth(codec.ContinueAuthentication, out)
	return gnet.None
}

// continueConnectAuth handles a packet received while the CONNECT's
// exchange is in progress.
func (c *client) continueConnectAuth(h codec.FixedHeader, body []byte) gnet.Action {
	a := c.v5.auth
	switch h.Type {
	case codec.AUTH:
	case codec.DISCONNECT:
		c.setCloseWhy("DISCONNECT during authentication")
		return gnet.Close
	default:
		return c.refuse(codec.Version5, codec.ProtocolError, "only AUTH or DISCONNECT may follow CONNECT until CONNACK (§4.12)")
	}
	au := &c.loop.auth
	if err := au.Decode(h, body, codec.Version5); err != nil {
		return c.refuse(codec.Version5, authCode(err), err.Error())
	}
	if au.ReasonCode != codec.ContinueAuthentication {
		return c.refuse(codec.Version5, codec.ProtocolError, "AUTH during CONNECT must continue the exchange (0x18)")
	}
	if string(au.Props.AuthMethod) != a.method {
		return c.refuse(codec.Version5, codec.ProtocolError, "AUTH names another authentication method than CONNECT")
	}
	out, done, err := a.ex.Step(au.Props.AuthData)
	if err != nil {
		a.ex = nil
		return c.refuse(codec.Version5, authCode(err), "authentication failed: "+err.Error())
	}
	if !done {
		c.sendAuth(codec.ContinueAuthentication, out)
		return gnet.None
	}
	a.identity = exchangeIdentity(a.ex)
	a.ex, a.done, a.final = nil, true, append([]byte(nil), out...)
	h, body = a.pendingH, a.pending
	a.pending = nil
	return c.handleConnect(h, body)
}

// handleAuth handles AUTH on a connected client: re-authentication.
func (c *client) handleAuth(h codec.FixedHeader, body []byte) gnet.Action {
	if c.version < codec.Version5 {
		return c.fail(codec.Errf(codec.ProtocolError, "", "AUTH before MQTT 5"))
	}
	au := &c.loop.auth
	if err := au.Decode(h, body, c.version); err != nil {
		return c.fail(err)
	}
	a := c.v5.auth
	if a == nil || a.authr == nil {
		return c.fail(codec.Errf(codec.ProtocolError, "", "AUTH from a client whose CONNECT named no authentication method (§4.12)"))
	}
	if string(au.Props.AuthMethod) != a.method {
		return c.fail(codec.Errf(codec.ProtocolError, "MQTT-4.12.1-1", "re-authentication with another method than CONNECT's"))
	}
	switch codec.ReasonCode(au.ReasonCode) {
	case codec.ReAuthenticate:
		if a.ex != nil {
			return c.fail(codec.Errf(codec.ProtocolError, "", "re-authentication started while one is in progress"))
		}
		a.ex = a.authr.Start(c.connectInfo(nil))
	case codec.ContinueAuthentication:
		if a.ex == nil {
			return c.fail(codec.Errf(codec.ProtocolError, "", "AUTH 0x18 with no exchange in progress"))
		}
	default:
		return c.fail(codec.Errf(codec.ProtocolError, "", "AUTH 0x%02X from a client", au.ReasonCode))
	}
	out, done, err := a.ex.Step(au.Props.AuthData)
	if err != nil {
		a.ex = nil
		return c.fail(codec.Errf(authCode(err), "MQTT-4.12.1-2", "re-authentication failed: %v", err))
	}
	if done {
		id := exchangeIdentity(a.ex)
		a.ex = nil
		if id != "" && id != c.username() {
			// The connection's identity was fixed at CONNECT: its
			// subscriptions and session were authorized for it.
			return c.fail(codec.Errf(codec.NotAuthorized, "MQTT-4.12.1-2", "re-authentication as another user (%q)", id))
		}
		c.sendAuth(codec.Success, out)
	} else {
		c.sendAuth(codec.ContinueAuthentication, out)
	}
	return gnet.None
}

// sendAuth queues an AUTH packet for the client.
func (c *client) sendAuth(code codec.ReasonCode, data []byte) {
	a := codec.Auth{ReasonCode: code}
	a.Props.AuthMethod = []byte(c.v5.auth.method)
	a.Props.Set(codec.PropAuthMethod)
	if len(data) > 0 {
		a.Props.AuthData = data
		a.Props.Set(codec.PropAuthData)
	}
	c.loop.out = a.Append(c.loop.out)
}

func (c *client) connectInfo(password []byte) ConnectInfo {
	return ConnectInfo{ClientID: c.id, Username: c.username(), Password: password,
		Remote: c.remoteAddr(), Local: c.conn.LocalAddr(), ProtocolVersion: c.version}
}

// enhancedAuthed reports whether the CONNECT was authenticated by an AUTH
// exchange, which then stands in for the password Authenticator.
func (c *client) enhancedAuthed() bool { return c.v5 != nil && c.v5.auth != nil && c.v5.auth.done }

// authPending reports whether a CONNECT waits for its AUTH exchange.
func (c *client) authPending() bool {
	return c.v5 != nil && c.v5.auth != nil && c.v5.auth.pending != nil
}
