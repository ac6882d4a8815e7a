// Package auth decides who a client is and what it may do: the broker's
// authentication (Authenticator for CONNECT user name and password,
// EnhancedAuthenticator for the MQTT 5.0 AUTH exchange) and authorization
// (Authorizer for PUBLISH and SUBSCRIBE), with the implementations tern
// ships.
//
// # Identity
//
// A client's identity, the user name an Authorizer is asked about and that
// owns its persistent session, comes only from authentication:
//
//   - with an Authenticator, the CONNECT User Name it verified;
//   - after an AUTH exchange, the user the exchange authenticated, when it
//     says (IdentifiedExchange, as SCRAM does), whatever User Name the
//     CONNECT carried, even none;
//   - otherwise the client is anonymous (""), whatever User Name it sent.
//
// The client id is chosen by the client and is never an identity; ACL
// patterns may use it (%c) only in ways a hostile id cannot widen.
//
// # Implementations
//
//   - PasswordFile checks CONNECT user name and password against a file of
//     PBKDF2-SHA256 hashes (`tern passwd` writes it). An unknown user costs
//     the same derivation as a known one, so timing does not reveal which
//     users exist.
//   - NewSCRAMSHA256 is the SCRAM-SHA-256 Authentication Method (RFC 5802,
//     RFC 7677) over AUTH packets, backed by a SCRAMStore: the broker never
//     sees the password, and the client learns the broker holds its
//     credential.
//   - Limiter slows online guessing for both: per user name and per source
//     address, a burst of failures locks the key out for a while. Each
//     PasswordFile and SCRAM method has one by default.
//   - ACLFile authorizes by rules in mosquitto's acl_file format: denies
//     win over grants, '$' topics need explicit rules, and $SYS is never
//     writable by clients.
//
// The package is a leaf: it does not import the server, which re-exports
// the interfaces and ConnectInfo with type aliases (server.Authenticator is
// auth.Authenticator), so code written against either compiles.
//
// # Concurrency and cost
//
// The broker calls every implementation from several event loops at once:
// they are safe for concurrent use, and their calls run on an event loop,
// so they must not block. Checking a password is CPU work on that loop:
// one PBKDF2 derivation, about 1–2 ms at DefaultPasswordIterations
// (PasswordFile remembers verified credentials, so a reconnecting device
// pays it once). A SCRAM step costs a few hashes: its PBKDF2 runs on the
// client. ACL decisions do not allocate.
package auth
