package stdnet

import "crypto/tls"

// TLSListener is one TLS listener.
type TLSListener struct {
	Addr     string `yaml:"addr"`      // host:port
	CertFile string `yaml:"cert_file"` // PEM certificate chain
	KeyFile  string `yaml:"key_file"`  // PEM private key
	// Config, when set, is used instead of loading CertFile/KeyFile.
	Config *tls.Config `yaml:"-"`
}
