package bench

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// curveByName maps --tls-curves names to crypto/tls's identifiers.
var curveByName = map[string]tls.CurveID{
	"X25519MLKEM768": tls.X25519MLKEM768, "X25519": tls.X25519,
	"P256": tls.CurveP256, "P-256": tls.CurveP256, "P384": tls.CurveP384, "P-384": tls.CurveP384,
	"P521": tls.CurveP521, "P-521": tls.CurveP521,
}

// TLSOptions make a Run's clients connect over TLS (Config.TLS).
type TLSOptions struct {
	// CAFile is a PEM file of the CAs the broker's certificate must chain
	// to. Default: the system roots.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and key, for
	// brokers requiring mutual TLS. Both or neither.
	CertFile, KeyFile string
	// Insecure skips verification of the broker's certificate.
	Insecure bool
	// ServerName is the name verified and sent in SNI. Default: the host
	// of each broker address.
	ServerName string
	// Curves are the key exchanges offered, in preference order, by name:
	// X25519MLKEM768, X25519, P256, P384, P521. Default: crypto/tls's
	// (X25519MLKEM768 first), which a Go broker accepts and a broker on
	// an older OpenSSL does not; the report names what was negotiated,
	// since a post-quantum exchange costs the broker more per handshake.
	Curves []string
	// Resume enables session resumption: clients share a session cache,
	// primed by one full handshake per broker before the clients connect,
	// so a connect storm measures resumed handshakes (a fleet reconnecting
	// after an outage). Without it every handshake is a full one.
	Resume bool
}

// clientConfig builds the crypto/tls client configuration for the broker at
// hostport; every broker's configuration shares cache (nil: no resumption).
func (o *TLSOptions) clientConfig(hostport string, cache tls.ClientSessionCache) (*tls.Config, error) {
	c := &tls.Config{InsecureSkipVerify: o.Insecure, ServerName: o.ServerName, ClientSessionCache: cache,
		MinVersion: tls.VersionTLS12}
	if c.ServerName == "" {
		host, _, err := net.SplitHostPort(hostport)
		if err != nil {
			return nil, err
		}
		c.ServerName = host
	}
	for _, name := range o.Curves {
		id, ok := curveByName[strings.ToUpper(name)]
		if !ok {
			return nil, fmt.Errorf("bench: TLS curve %q: want X25519MLKEM768, X25519, P256, P384 or P521", name)
		}
		c.CurvePreferences = append(c.CurvePreferences, id)
	}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("bench: --cafile: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("bench: --cafile %s: no PEM certificate in it", o.CAFile)
		}
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("bench: --cert and --key go together")
	}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("bench: client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
