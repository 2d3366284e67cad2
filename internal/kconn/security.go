package kconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/IBM/sarama"
	"github.com/xdg-go/scram"
)

// Connecting to a secured cluster: TLS (KAFKA_TLS_*) and SASL
// (KAFKA_SASL_*). Validate checks these settings, files included, naming
// every problem at once; Apply turns them into sarama's; and
// AuthFailure tells a refused login apart from a broker that is not there
// yet, so Run fails at once on the first instead of retrying until
// KAFKA_CONNECT_TIMEOUT. The password never appears in a log line, an
// error or Config's String and LogValue.

// SASL mechanisms accepted by KAFKA_SASL_MECHANISM; worker.SASL* name the
// same.
const (
	SASLPlain       = "PLAIN"
	SASLSCRAMSHA256 = "SCRAM-SHA-256"
	SASLSCRAMSHA512 = "SCRAM-SHA-512"
	SASLOAuthBearer = "OAUTHBEARER"
)

// Mechanisms lists them, for messages.
var Mechanisms = []string{SASLPlain, SASLSCRAMSHA256, SASLSCRAMSHA512, SASLOAuthBearer}

// Security is the KAFKA_TLS_* and KAFKA_SASL_* settings.
type Security struct {
	TLSEnabled            bool
	TLSCAFile             string
	TLSCertFile           string
	TLSKeyFile            string
	TLSServerName         string
	TLSInsecureSkipVerify bool
	SASLMechanism         string
	SASLUsername          string
	SASLPassword          string
	SASLPasswordFile      string
}

// TLSOn says whether the worker connects over TLS: KAFKA_TLS_ENABLED, or
// any other KAFKA_TLS_* setting.
func (c Security) TLSOn() bool {
	return c.TLSEnabled || c.TLSCAFile != "" || c.TLSCertFile != "" || c.TLSKeyFile != "" ||
		c.TLSServerName != "" || c.TLSInsecureSkipVerify
}

// Mechanism is KAFKA_SASL_MECHANISM in canonical (upper) case, or "".
func (c Security) Mechanism() string {
	return strings.ToUpper(strings.TrimSpace(c.SASLMechanism))
}

// validate appends a problem for every bad TLS or SASL setting (see
// Conn.Validate). hasTokenProvider says whether tokenOption, the option
// that supplies OAUTHBEARER tokens, was given.
func (c Security) validate(add func(string, ...any), hasTokenProvider bool, tokenOption string) {
	if c.TLSOn() {
		// BuildTLS reads every file; each failure names its variable.
		for _, err := range c.tlsProblems() {
			add("%s", err)
		}
	}
	mech := c.Mechanism()
	switch mech {
	case "":
		var set []string
		for _, v := range []struct{ name, val string }{
			{"KAFKA_SASL_USERNAME", c.SASLUsername}, {"KAFKA_SASL_PASSWORD", c.SASLPassword},
			{"KAFKA_SASL_PASSWORD_FILE", c.SASLPasswordFile},
		} {
			if v.val != "" {
				set = append(set, v.name)
			}
		}
		if len(set) > 0 {
			add("KAFKA_SASL_MECHANISM: missing, but %s set: set the mechanism (%s) or unset them",
				strings.Join(set, ", "), strings.Join(Mechanisms, ", "))
		}
		return
	case SASLOAuthBearer:
		if !hasTokenProvider {
			add("KAFKA_SASL_MECHANISM: OAUTHBEARER takes its tokens from code: pass %s to New", tokenOption)
		}
		for _, v := range []struct{ name, val string }{
			{"KAFKA_SASL_USERNAME", c.SASLUsername}, {"KAFKA_SASL_PASSWORD", c.SASLPassword},
			{"KAFKA_SASL_PASSWORD_FILE", c.SASLPasswordFile},
		} {
			if v.val != "" {
				add("%s: not used with KAFKA_SASL_MECHANISM=OAUTHBEARER (the token comes from WithTokenProvider): unset it", v.name)
			}
		}
		return
	case SASLPlain, SASLSCRAMSHA256, SASLSCRAMSHA512:
	default:
		add("KAFKA_SASL_MECHANISM=%q: unknown mechanism: use one of %s", c.SASLMechanism, strings.Join(Mechanisms, ", "))
		return
	}
	if strings.TrimSpace(c.SASLUsername) == "" {
		add("KAFKA_SASL_USERNAME: missing: KAFKA_SASL_MECHANISM=%s needs a user name", mech)
	}
	switch {
	case c.SASLPassword != "" && c.SASLPasswordFile != "":
		add("KAFKA_SASL_PASSWORD_FILE: set together with KAFKA_SASL_PASSWORD: set only one of them")
	case c.SASLPassword == "" && c.SASLPasswordFile == "":
		add("KAFKA_SASL_PASSWORD: missing: KAFKA_SASL_MECHANISM=%s needs a password: set it, or KAFKA_SASL_PASSWORD_FILE", mech)
	case c.SASLPasswordFile != "":
		if _, err := c.Password(); err != nil {
			add("%s", err)
		}
	}
}

// Password returns the SASL password: KAFKA_SASL_PASSWORD, or the content
// of KAFKA_SASL_PASSWORD_FILE less one trailing line break. Its errors
// never hold the password.
func (c Security) Password() (string, error) {
	if c.SASLPasswordFile == "" {
		return c.SASLPassword, nil
	}
	b, err := os.ReadFile(c.SASLPasswordFile)
	if err != nil {
		return "", fmt.Errorf("KAFKA_SASL_PASSWORD_FILE: cannot read it: %w", err)
	}
	p := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if p == "" {
		return "", fmt.Errorf("KAFKA_SASL_PASSWORD_FILE: %s is empty", c.SASLPasswordFile)
	}
	return p, nil
}

// tlsProblems lists what is wrong with the KAFKA_TLS_* settings, each
// naming its variable.
func (c Security) tlsProblems() []string {
	_, errs := c.BuildTLS()
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = e.Error()
	}
	return out
}

// BuildTLS returns the client TLS configuration, or every problem found.
func (c Security) BuildTLS() (*tls.Config, []error) {
	var errs []error
	t := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLSServerName, InsecureSkipVerify: c.TLSInsecureSkipVerify} //nolint:gosec // opt-in, warned about at start
	if c.TLSCAFile != "" {
		pem, err := os.ReadFile(c.TLSCAFile)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("KAFKA_TLS_CA_FILE: cannot read it: %w", err))
		default:
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, fmt.Errorf("KAFKA_TLS_CA_FILE: %s holds no PEM certificate", c.TLSCAFile))
			}
			t.RootCAs = pool
		}
	}
	switch {
	case c.TLSCertFile != "" && c.TLSKeyFile == "":
		errs = append(errs, errors.New("KAFKA_TLS_KEY_FILE: missing: KAFKA_TLS_CERT_FILE is set, and mutual TLS needs both"))
	case c.TLSCertFile == "" && c.TLSKeyFile != "":
		errs = append(errs, errors.New("KAFKA_TLS_CERT_FILE: missing: KAFKA_TLS_KEY_FILE is set, and mutual TLS needs both"))
	case c.TLSCertFile != "":
		certPEM, cerr := os.ReadFile(c.TLSCertFile)
		if cerr != nil {
			errs = append(errs, fmt.Errorf("KAFKA_TLS_CERT_FILE: cannot read it: %w", cerr))
		}
		keyPEM, kerr := os.ReadFile(c.TLSKeyFile)
		if kerr != nil {
			errs = append(errs, fmt.Errorf("KAFKA_TLS_KEY_FILE: cannot read it: %w", kerr))
		}
		if cerr == nil && kerr == nil {
			cert, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				errs = append(errs, fmt.Errorf("KAFKA_TLS_CERT_FILE, KAFKA_TLS_KEY_FILE: %s and %s are not a certificate and its key: %v",
					c.TLSCertFile, c.TLSKeyFile, err))
			} else {
				t.Certificates = []tls.Certificate{cert}
			}
		}
	}
	return t, errs
}

// Apply sets sarama's TLS and SASL settings from c. tp is the
// WithTokenProvider option, used only with OAUTHBEARER.
func (c Security) Apply(s *sarama.Config, tp sarama.AccessTokenProvider) error {
	if c.TLSOn() {
		t, errs := c.BuildTLS()
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		s.Net.TLS.Enable, s.Net.TLS.Config = true, t
	}
	mech := c.Mechanism()
	if mech == "" {
		return nil
	}
	s.Net.SASL.Enable = true
	s.Net.SASL.Handshake = true
	// v1 (SaslAuthenticate requests) lets the broker answer a refused login
	// with an error code instead of only closing the connection.
	s.Net.SASL.Version = sarama.SASLHandshakeV1
	s.Net.SASL.Mechanism = sarama.SASLMechanism(mech)
	switch mech {
	case SASLOAuthBearer:
		s.Net.SASL.TokenProvider = tp
		return nil
	case SASLSCRAMSHA256:
		s.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.SHA256} }
	case SASLSCRAMSHA512:
		s.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.SHA512} }
	}
	p, err := c.Password()
	if err != nil {
		return err
	}
	s.Net.SASL.User, s.Net.SASL.Password = c.SASLUsername, p
	return nil
}

// scramClient implements sarama.SCRAMClient with github.com/xdg-go/scram,
// as sarama's own examples do.
type scramClient struct {
	hash scram.HashGeneratorFcn
	conv *scram.ClientConversation
}

func (s *scramClient) Begin(user, password, authzID string) error {
	c, err := s.hash.NewClient(user, password, authzID)
	if err != nil {
		// scram's errors speak of the user name's or password's form
		// (SASLprep), never of the value.
		return fmt.Errorf("SCRAM: %w", err)
	}
	s.conv = c.NewConversation()
	return nil
}

func (s *scramClient) Step(challenge string) (string, error) { return s.conv.Step(challenge) }

func (s *scramClient) Done() bool { return s.conv.Done() }

// AuthFailure returns an error that retrying cannot cure when err, from
// probing addr, says the broker refused the TLS handshake's certificate or
// the SASL login, and nil otherwise. answersUnauthenticated is asked only
// when the SASL login ended with the connection closed (which is how some
// brokers refuse a login): if the broker answers a connection that does
// not log in, the closed connection was the refusal.
func (c Security) AuthFailure(addr string, err error, answersUnauthenticated func() bool) error {
	if err == nil {
		return nil
	}
	if TLSRejected(err) {
		return fmt.Errorf("kafkaworker: TLS handshake with %s failed: %w; check KAFKA_TLS_CA_FILE (the CA that signed the broker's certificate), "+
			"KAFKA_TLS_SERVER_NAME, and for mutual TLS KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE", addr, err)
	}
	mech := c.Mechanism()
	if mech == "" {
		return nil
	}
	who := fmt.Sprintf("as user %q", c.SASLUsername)
	if mech == SASLOAuthBearer {
		who = "with the token from WithTokenProvider"
	}
	var kerr sarama.KError
	if errors.As(err, &kerr) {
		switch kerr {
		case sarama.ErrSASLAuthenticationFailed, sarama.ErrIllegalSASLState:
			return fmt.Errorf("kafkaworker: SASL %s authentication failed at %s %s: %w; check KAFKA_SASL_USERNAME and the password", mech, addr, who, err)
		case sarama.ErrUnsupportedSASLMechanism:
			return fmt.Errorf("kafkaworker: SASL %s authentication failed at %s %s: the broker does not accept mechanism %s: %w; check KAFKA_SASL_MECHANISM", mech, addr, who, mech, err)
		}
		return nil
	}
	if connectionDropped(err) && answersUnauthenticated() {
		return fmt.Errorf("kafkaworker: SASL %s authentication failed at %s %s: the broker closed the connection during the login (%v); check KAFKA_SASL_USERNAME and the password", mech, addr, who, err)
	}
	return nil
}

// TLSRejected says whether err is a certificate the client would not
// accept, or a TLS alert from the broker (which refused the handshake:
// no or a bad client certificate, no common protocol version or cipher).
func TLSRejected(err error) bool {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
		alert    tls.AlertError
		op       *net.OpError
	)
	return errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		errors.As(err, &verify) || errors.As(err, &alert) ||
		errors.As(err, &op) && op.Op == "remote error" // crypto/tls's form of a received alert
}

func connectionDropped(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}
