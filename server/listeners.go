package server

// The TLS and WebSocket listeners run on the standard-library transport,
// server/stdnet, which knows nothing of the broker: it adapts its
// connections to gnet.Conn and gnet.EventLoop and drives the same handler
// as the gnet listeners. This file builds its configuration from Options.

import "github.com/ternmq/tern/server/stdnet"

// TLSListener is one MQTT-over-TLS listener; see stdnet.TLSListener.
type TLSListener = stdnet.TLSListener

// WebSocketListener is one MQTT-over-WebSocket listener; see
// stdnet.WebSocketListener.
type WebSocketListener = stdnet.WebSocketListener

// startNetListeners opens the TLS and WebSocket listeners; their bound
// addresses are then in TLSAddrs and WebSocketAddrs. Called once by Serve,
// before the gnet engine starts.
func (s *Server) startNetListeners() error {
	t, err := stdnet.Start(stdnet.Config{
		Handler:          &handler{s: s},
		Loops:            s.opts.EventLoops,
		MaxPacketSize:    s.opts.MaxPacketSize,
		HandshakeTimeout: s.opts.ConnectTimeout,
		Logger:           s.log,
	}, s.opts.TLSListeners, s.opts.WebSocketListeners)
	if err != nil {
		return err
	}
	s.tlsT = t
	s.tlsAddrs = t.TLSAddrs()
	s.wsAddrs = t.WebSocketAddrs()
	return nil
}
