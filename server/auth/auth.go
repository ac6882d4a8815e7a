package auth

import "net"

// ConnectInfo is what an Authenticator or EnhancedAuthenticator sees of a
// CONNECT (or, for a re-authentication, of the connected client).
type ConnectInfo struct {
	// ClientID is the client identifier (assigned by the broker when the
	// client sent none). It is chosen by the client: never an identity.
	ClientID string
	// Username is the CONNECT User Name, or, for a re-authentication, the
	// identity the client authenticated as. Empty for an anonymous client.
	Username string
	// Password is the CONNECT Password; valid only during the call.
	Password []byte
	// Remote and Local are the connection's addresses. Remote is what a
	// Limiter keys source addresses by.
	Remote, Local net.Addr
	// ProtocolVersion is 3 (3.1), 4 (3.1.1) or 5.
	ProtocolVersion byte
}

// Authenticator decides whether a client may connect.
type Authenticator interface {
	// Authenticate returns nil to accept the client. An error refuses it:
	// a *codec.Error with a code ≥ 0x80 names the reason (e.g. 0x8A Banned,
	// ErrLockedOut), any other error means Bad User Name or Password. It
	// is called on the connection's event loop, concurrently from several
	// loops, and must not block.
	Authenticate(c ConnectInfo) error
}

// Authorizer decides what a connected client may do. Its methods are called
// on event loops, concurrently from several loops, and must not block.
// username is the identity authentication established ("" for an
// anonymous client); clientID is chosen by the client.
type Authorizer interface {
	// CanPublish reports whether the client may publish to topic.
	CanPublish(clientID, username, topic string) bool
	// CanSubscribe reports whether the client may subscribe to filter
	// (possibly a shared subscription "$share/group/filter").
	CanSubscribe(clientID, username, filter string) bool
}

// EnhancedAuthenticator implements one MQTT 5.0 Authentication Method
// (§4.12): a challenge/response conversation carried in AUTH packets.
type EnhancedAuthenticator interface {
	// Method is the Authentication Method name, e.g. "SCRAM-SHA-256".
	Method() string
	// Start begins a conversation for a CONNECT or a re-authentication.
	// info.Password is valid only during the call. It is called on the
	// connection's event loop, concurrently from several loops, and must
	// not block.
	Start(info ConnectInfo) Exchange
}

// Exchange is one authentication conversation. Only the connection's event
// loop calls it, one step at a time.
type Exchange interface {
	// Step is given the client's Authentication Data (nil if none) and
	// returns the data to send back. done ends the conversation with
	// success (the data goes in CONNACK or AUTH 0x00); a non-nil error ends
	// it with failure: a *codec.Error carries the reason code to send,
	// any other error means 0x87 (Not authorized).
	Step(clientData []byte) (serverData []byte, done bool, err error)
}

// IdentifiedExchange is an Exchange that establishes who the client is.
// When a CONNECT's exchange succeeds, the broker takes Identity as the
// client's user name for the Authorizer and for session ownership,
// whatever User Name the CONNECT carried; a re-authentication must keep
// it. An Exchange that is not an IdentifiedExchange leaves the CONNECT
// User Name in place: it was given that name in ConnectInfo and vouches for
// it by succeeding.
type IdentifiedExchange interface {
	Exchange
	// Identity is the authenticated user name. It is called after Step
	// returned done, on the connection's event loop.
	Identity() string
}
