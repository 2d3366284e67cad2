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

// conn is c's connection settings, as kconn checks them (shared with
// package producer).
func (c Config) conn() kconn.Conn {
	return kconn.Conn{
		Brokers: c.Brokers, ClientID: c.ClientID, Version: c.Version, ConnectTimeout: c.ConnectTimeout,
		Security: c.security(), TokenOption: "worker.WithTokenProvider",
	}
}

// saslMechanism is KAFKA_SASL_MECHANISM in canonical (upper) case, or "".
func (c Config) saslMechanism() string { return c.security().Mechanism() }

// warnInsecure logs, at the start of Run, the settings that weaken
// security: skipping certificate verification, and a PLAIN password sent
// without TLS.
func (w *Worker) warnInsecure() {
	for _, msg := range w.cfg.security().Warnings() {
		w.log.Warn(msg)
	}
}

// logSecurity is the part of Config.LogValue about TLS and SASL: paths
// and names, and [set] for the password.
func (c Config) logSecurity() []slog.Attr { return c.security().LogAttrs() }
