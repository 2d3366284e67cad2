package kafkatest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Secured clusters: WithSASL and WithTLS start a cluster that requires a
// SASL login or TLS (or both), and the Cluster's own client connects the
// same way, so a service can be tested against the security it meets in
// production.

// WithSASL requires every connection to log in with mechanism (PLAIN,
// SCRAM-SHA-256 or SCRAM-SHA-512) as user with password. The user is a
// superuser, so ACLs (WithACLs) do not bind it; the Cluster's own client
// logs in as that user too. WithUser adds users that ACLs bind. It may be given more
// than once, for several users or mechanisms; the client uses the first.
func WithSASL(mechanism, user, password string) Option {
	return func(o *options) {
		o.sasl = append(o.sasl, saslUser{strings.ToUpper(mechanism), user, password})
	}
}

// WithTLS serves TLS only, with a server certificate for 127.0.0.1 and
// localhost issued by a certificate authority generated in memory for this
// cluster. CAFile and CAPEM give that CA to clients; ClientCertFiles gives a
// client certificate it issued.
func WithTLS() Option { return func(o *options) { o.tls = true } }

// WithMutualTLS is WithTLS, and the broker also requires every client to
// present a certificate issued by the cluster's CA (see ClientCertFiles).
func WithMutualTLS() Option { return func(o *options) { o.tls, o.mutualTLS = true, true } }

type saslUser struct{ mechanism, user, password string }

// certs is a cluster's generated PKI.
type certs struct {
	caPEM             []byte
	server            tls.Certificate
	clientCert, clKey []byte // PEM
	dir               string // where CAFile and ClientCertFiles write, removed on Close
}

func (o *options) security() (kopts []kfake.Opt, copts []kgo.Opt, pki *certs, err error) {
	for _, s := range o.sasl {
		if err := checkMechanism("WithSASL", s.mechanism); err != nil {
			return nil, nil, nil, err
		}
		kopts = append(kopts, kfake.Superuser(s.mechanism, s.user, s.password))
	}
	if len(o.sasl) > 0 {
		kopts = append(kopts, kfake.EnableSASL())
		copts = append(copts, kgo.SASL(clientMechanism(o.sasl[0])))
	}
	if !o.tls {
		return kopts, copts, nil, nil
	}
	pki, err = newCerts()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("kafkatest: generate TLS certificates: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pki.caPEM)
	server := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pki.server}}
	if o.mutualTLS {
		server.ClientAuth, server.ClientCAs = tls.RequireAndVerifyClientCert, pool
	}
	client := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	cc, err := tls.X509KeyPair(pki.clientCert, pki.clKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("kafkatest: client certificate: %w", err)
	}
	client.Certificates = []tls.Certificate{cc}
	kopts = append(kopts, kfake.TLS(server))
	copts = append(copts, kgo.DialTLSConfig(client))
	return kopts, copts, pki, nil
}

func clientMechanism(s saslUser) sasl.Mechanism {
	switch s.mechanism {
	case "SCRAM-SHA-256":
		return scram.Auth{User: s.user, Pass: s.password}.AsSha256Mechanism()
	case "SCRAM-SHA-512":
		return scram.Auth{User: s.user, Pass: s.password}.AsSha512Mechanism()
	default:
		return plain.Auth{User: s.user, Pass: s.password}.AsMechanism()
	}
}

// newCerts makes a CA, a server certificate for 127.0.0.1 and localhost,
// and a client certificate, all ECDSA P-256, valid for a day.
func newCerts() (*certs, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kafkatest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP, dns []string) (certPEM, keyPEM []byte, err error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: ips, DNSNames: dns,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return nil, nil, err
		}
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
	}
	sc, sk, err := issue(2, "kafkatest broker", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, []string{"localhost"})
	if err != nil {
		return nil, err
	}
	server, err := tls.X509KeyPair(sc, sk)
	if err != nil {
		return nil, err
	}
	cc, ck, err := issue(3, "kafkatest client", x509.ExtKeyUsageClientAuth, nil, nil)
	if err != nil {
		return nil, err
	}
	return &certs{
		caPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		server: server, clientCert: cc, clKey: ck,
	}, nil
}

// CAPEM returns the PEM of the CA that issued the broker's certificate, or
// nil when the cluster does not serve TLS (WithTLS).
func (c *Cluster) CAPEM() []byte {
	if c.pki == nil {
		return nil
	}
	return append([]byte(nil), c.pki.caPEM...)
}

// CAFile writes the CA's PEM (see CAPEM) to a file, for KAFKA_TLS_CA_FILE,
// and returns its path. The file is removed by Close.
func (c *Cluster) CAFile() (string, error) {
	if c.pki == nil {
		return "", fmt.Errorf("kafkatest: CAFile: the cluster does not serve TLS: start it WithTLS")
	}
	return c.writeFile("ca.pem", c.pki.caPEM)
}

// ClientCertFiles writes a client certificate issued by the cluster's CA
// and its key to files, for KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE
// (required WithMutualTLS), and returns their paths. Close removes them.
func (c *Cluster) ClientCertFiles() (certFile, keyFile string, err error) {
	if c.pki == nil {
		return "", "", fmt.Errorf("kafkatest: ClientCertFiles: the cluster does not serve TLS: start it WithTLS or WithMutualTLS")
	}
	if certFile, err = c.writeFile("client.pem", c.pki.clientCert); err != nil {
		return "", "", err
	}
	if keyFile, err = c.writeFile("client-key.pem", c.pki.clKey); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func (c *Cluster) writeFile(name string, data []byte) (string, error) {
	c.pkiMu.Lock()
	defer c.pkiMu.Unlock()
	if c.pki.dir == "" {
		dir, err := os.MkdirTemp("", "kafkatest-tls-")
		if err != nil {
			return "", fmt.Errorf("kafkatest: %w", err)
		}
		c.pki.dir = dir
	}
	p := filepath.Join(c.pki.dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		return "", fmt.Errorf("kafkatest: %w", err)
	}
	return p, nil
}

func (c *Cluster) removeFiles() {
	if c.pki == nil {
		return
	}
	c.pkiMu.Lock()
	defer c.pkiMu.Unlock()
	if c.pki.dir != "" {
		_ = os.RemoveAll(c.pki.dir)
		c.pki.dir = ""
	}
}
