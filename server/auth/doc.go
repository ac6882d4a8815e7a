// Package auth decides who a client is and what it may do: the broker's
// authentication (Authenticator, and the MQTT 5.0 AUTH exchange through
// EnhancedAuthenticator) and authorization (Authorizer), with the
// implementations tern ships.
//
//   - PasswordFile authenticates CONNECT user name and password against a
//     file of PBKDF2-SHA256 hashes (`tern passwd` writes it).
//   - NewSCRAMSHA256 is the SCRAM-SHA-256 Authentication Method (RFC 5802,
//     RFC 7677) over MQTT 5.0 AUTH packets, backed by a SCRAMStore.
//   - ACLFile authorizes PUBLISH and SUBSCRIBE by rules in mosquitto's
//     acl_file format.
//
// The package is a leaf: it does not import the server. The server
// re-exports the interfaces and ConnectInfo with type aliases, so code
// written against server.Authenticator and friends keeps compiling.
//
// # Concurrency
//
// Every implementation is called from several event loops at once and is
// safe for concurrent use. Calls run on an event loop and must not block.
package auth
