package worker

import (
	"errors"
	"os"
	"reflect"
	"strings"

	"github.com/kafkaworker/kafkaworker/internal/envconf"
)

// Reading Config from the environment. A variable the user set is never
// replaced by a default: a value that does not parse is an error that
// echoes it, and so is a variable set to nothing, except where an empty
// value has a meaning of its own (emptyMeans). The reading itself is
// internal/envconf's, and the rules of the KAFKA_* connection settings
// are internal/kconn's (kconn.Conn), shared with package producer.

// emptyMeans lists the variables that may be set to an empty value, and
// what that means. Every other variable set to nothing (or only spaces) is
// an error: it usually comes from a template or a secret that did not
// render, and silently running on the default would hide that.
var emptyMeans = map[string]string{
	"RETRY_TOPIC_DELAYS": "no retry topics",
	"METRICS_ADDR":       "serve no endpoints",
	"KAFKA_INSTANCE_ID":  "no static membership",
}

// ConfigFromEnv reads the Config from the process environment and validates
// it. The error, if any, names every offending variable, the value it was
// given and what to do.
func ConfigFromEnv() (Config, error) {
	return configFrom(envMap(os.Environ()))
}

func envMap(kv []string) map[string]string { return envconf.Environ(kv) }

// envVars lists every variable Config reads, with its field: the env tags,
// and KAFKA_BOOTSTRAP_SERVERS, the alias of KAFKA_BROKERS.
func envVars() map[string]reflect.StructField { return envconf.Vars(reflect.TypeFor[Config]()) }

func configFrom(environ map[string]string) (Config, error) {
	var c Config
	problems, environ := envconf.Read(&c, environ, emptyMeans)

	// caarlos0/env treats an empty variable as unset and would apply the
	// default; RETRY_TOPIC_DELAYS set to nothing means "no retry topics".
	if v, ok := environ["RETRY_TOPIC_DELAYS"]; ok && strings.TrimSpace(v) == "" {
		c.RetryTopicDelays = nil
	}
	conn := c.conn()
	problems = append(problems, conn.FinishEnv(environ)...)
	c.Brokers = conn.Brokers
	c.Topics = envconf.TrimList(c.Topics)
	// Kafka's own names for where a new group starts.
	if alias, ok := initialOffsetAliases[c.InitialOffset]; ok {
		c.InitialOffset = alias
	}

	var validation []string
	if err := c.Validate(); err != nil {
		var ve *ValidationError
		if !errors.As(err, &ve) {
			return Config{}, err
		}
		validation = ve.Problems
	}
	if p := envconf.Merge(problems, validation); len(p) > 0 {
		return Config{}, &ValidationError{Problems: p}
	}
	return c, nil
}
