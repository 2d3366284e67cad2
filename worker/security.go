package worker

import (
	"log/slog"

	"github.com/kafkaworker/kafkaworker/internal/kconn"
)

// Connecting to a secured cluster: TLS (KAFKA_TLS_*) and SASL
// (KAFKA_SASL_*), in internal/kconn; here are the names and what Config
// hands it. The password never appears in a log line, an error or Config's
// String and LogValue.

// SASL mechanisms accepted by KAFKA_SASL_MECHANISM.
const (
	SASLPlain       = kconn.SASLPlain       // "PLAIN"
	SASLSCRAMSHA256 = kconn.SASLSCRAMSHA256 // "SCRAM-SHA-256"
	SASLSCRAMSHA512 = kconn.SASLSCRAMSHA512 // "SCRAM-SHA-512"
	SASLOAuthBearer = kconn.SASLOAuthBearer // "OAUTHBEARER"
)

// security is c's TLS and SASL settings, as kconn takes them.
func (c Config) security() kconn.Security {
	return kconn.Security{
		TLSEnabled: c.TLSEnabled, TLSCAFile: c.TLSCAFile, TLSCertFile: c.TLSCertFile, TLSKeyFile: c.TLSKeyFile,
		TLSServerName: c.TLSServerName, TLSInsecureSkipVerify: c.TLSInsecureSkipVerify,
		SASLMechanism: c.SASLMechanism, SASLUsername: c.SASLUsername, SASLPassword: c.SASLPassword, SASLPasswordFile: c.SASLPasswordFile,
	}
}

// saslMechanism is KAFKA_SASL_MECHANISM in canonical (upper) case, or "".
func (c Config) saslMechanism() string { return c.security().Mechanism() }

// warnInsecure logs, at the start of Run, the settings that weaken
// security: skipping certificate verification, and a PLAIN password sent
// without TLS.
func (w *Worker) warnInsecure() {
	if w.cfg.TLSInsecureSkipVerify {
		w.log.Warn("KAFKA_TLS_INSECURE_SKIP_VERIFY=true: the broker's certificate is not verified, so anyone on the path can impersonate it; use this in development only")
	}
	if w.cfg.security().Mechanism() == SASLPlain && !w.cfg.security().TLSOn() {
		w.log.Warn("KAFKA_SASL_MECHANISM=PLAIN without TLS: the password crosses the network in cleartext; set KAFKA_TLS_ENABLED=true")
	}
}

// logSecurity is the part of Config.LogValue about TLS and SASL: paths
// and names, and [set] for the password.
func (c Config) logSecurity() []slog.Attr {
	pw := ""
	if c.SASLPassword != "" {
		pw = "[set]"
	}
	return []slog.Attr{
		slog.Bool("tls_enabled", c.security().TLSOn()), slog.String("tls_ca_file", c.TLSCAFile),
		slog.String("tls_cert_file", c.TLSCertFile), slog.String("tls_key_file", c.TLSKeyFile),
		slog.String("tls_server_name", c.TLSServerName), slog.Bool("tls_insecure_skip_verify", c.TLSInsecureSkipVerify),
		slog.String("sasl_mechanism", c.SASLMechanism), slog.String("sasl_username", c.SASLUsername),
		slog.String("sasl_password", pw), slog.String("sasl_password_file", c.SASLPasswordFile),
	}
}
