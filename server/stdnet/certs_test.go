package stdnet

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"strings"
	"testing"
)

// Each identity source reads its field; a certificate without it is an
// error naming the field, and an unknown source is errUnknownSource.
func TestCertIdentitySources(t *testing.T) {
	u, _ := url.Parse("spiffe://acme/dev/1")
	cert := &x509.Certificate{
		Subject:  pkix.Name{CommonName: "dev1", Organization: []string{"Acme"}, Country: []string{"DE"}},
		DNSNames: []string{"dev1.acme.example", "alt.example"}, EmailAddresses: []string{"dev1@acme.example"},
		URIs: []*url.URL{u},
	}
	for from, want := range map[string]string{
		IdentityCN: "dev1", IdentitySubject: "CN=dev1,O=Acme,C=DE", IdentitySANDNS: "dev1.acme.example",
		IdentitySANEmail: "dev1@acme.example", IdentitySANURI: "spiffe://acme/dev/1",
	} {
		if got, err := certIdentity(cert, from); err != nil || got != want {
			t.Errorf("%s: got %q, %v; want %q", from, got, err, want)
		}
	}
	for _, from := range []string{IdentityCN, IdentitySubject, IdentitySANDNS, IdentitySANEmail, IdentitySANURI} {
		if _, err := certIdentity(&x509.Certificate{}, from); err == nil || !strings.Contains(err.Error(), "has no "+from) {
			t.Errorf("%s of an empty certificate: %v", from, err)
		}
	}
	if _, err := certIdentity(cert, "serial"); !errors.Is(err, errUnknownSource) {
		t.Errorf("unknown source: %v", err)
	}
}
