package worker

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/kafkaworker/kafkaworker/handler"
)

// A variable set to nothing is an error naming it, unless empty means
// something (emptyMeans); it is never quietly replaced by the default.
func TestConfigSetButEmptyIsAnError(t *testing.T) {
	t.Parallel()
	for name := range envVars() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := merge(validEnv(), map[string]string{name: " "})
			c, err := configFrom(env)
			if _, meaningful := emptyMeans[name]; meaningful {
				if err != nil {
					t.Fatalf("%s set empty means %q, want no error; got %v", name, emptyMeans[name], err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("%s=\" \": got %v (config %v), want a *ValidationError", name, err, c)
			}
			want := fmt.Sprintf("%s=%q: set but empty", name, " ")
			if len(ve.Problems) != 1 || !strings.HasPrefix(ve.Problems[0], want) {
				t.Fatalf("want exactly one problem starting %q, got:\n%v", want, err)
			}
		})
	}
	_, err := configFrom(merge(validEnv(), map[string]string{"WORKER_CONCURRENCY": ""}))
	wantProblems(t, err, `WORKER_CONCURRENCY="": set but empty: give it a value, or unset it for the default (64)`)
	c, err := configFrom(merge(validEnv(), map[string]string{"METRICS_ADDR": "", "KAFKA_INSTANCE_ID": ""}))
	if err != nil || c.MetricsAddr != "" || c.InstanceID != "" {
		t.Fatalf("METRICS_ADDR and KAFKA_INSTANCE_ID may be empty: %v, %v", c, err)
	}
}

// A value that does not parse is echoed in the error.
func TestConfigEchoesBadValues(t *testing.T) {
	t.Parallel()
	_, err := configFrom(merge(validEnv(), map[string]string{"WORKER_CONCURRENCY": "abc", "WORKER_ORDERING": "fifo"}))
	wantProblems(t, err, `WORKER_CONCURRENCY="abc": cannot parse as a whole number`, `WORKER_ORDERING="fifo": unknown ordering: use key, partition or none`)
}

// Kafka's earliest and latest are aliases of oldest and newest, from the
// environment and in a Config filled in code.
func TestConfigInitialOffsetAliases(t *testing.T) {
	t.Parallel()
	for alias, want := range map[string]InitialOffset{"earliest": OffsetOldest, "latest": OffsetNewest, "oldest": OffsetOldest, "newest": OffsetNewest} {
		c, err := configFrom(merge(validEnv(), map[string]string{"KAFKA_INITIAL_OFFSET": alias}))
		if err != nil {
			t.Fatalf("KAFKA_INITIAL_OFFSET=%s: %v", alias, err)
		}
		if c.InitialOffset != want {
			t.Errorf("KAFKA_INITIAL_OFFSET=%s: InitialOffset %q, want %q", alias, c.InitialOffset, want)
		}
	}
	c, err := configFrom(validEnv())
	if err != nil {
		t.Fatal(err)
	}
	c.InitialOffset = "latest"
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate refuses Kafka's alias: %v", err)
	}
	s, err := saramaConfig(c, nil)
	if err != nil || s.Consumer.Offsets.Initial != sarama.OffsetNewest {
		t.Fatalf("InitialOffset latest: sarama starts at %d (%v), want OffsetNewest", s.Consumer.Offsets.Initial, err)
	}
}

// One group timeout set alone against sarama's default for the other:
// the error names the variable and the timeout in force, not a sarama
// field.
func TestConfigGroupTimeoutAgainstDefault(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"KAFKA_HEARTBEAT_INTERVAL": "15s"},
			"KAFKA_HEARTBEAT_INTERVAL=15s: must be below the session timeout, which is 10s (sarama's default: KAFKA_SESSION_TIMEOUT is not set)"},
		{map[string]string{"KAFKA_SESSION_TIMEOUT": "2s"},
			"KAFKA_SESSION_TIMEOUT=2s: must be above the heartbeat interval, which is 3s (sarama's default: KAFKA_HEARTBEAT_INTERVAL is not set)"},
	} {
		_, err := configFrom(merge(validEnv(), tc.env))
		wantProblems(t, err, tc.want)
		if strings.Contains(err.Error(), "Consumer.Group") {
			t.Errorf("the error speaks of a sarama field: %v", err)
		}
	}
	if _, err := configFrom(merge(validEnv(), map[string]string{"KAFKA_HEARTBEAT_INTERVAL": "2s"})); err != nil {
		t.Fatalf("a heartbeat below the default session timeout: %v", err)
	}
}

// Every field of Config is printed (a field added without its log entry
// fails here), the password as [set].
func TestConfigPrintsEverySetting(t *testing.T) {
	t.Parallel()
	var c Config
	v := reflect.ValueOf(&c).Elem()
	var want []string
	bools := 0
	for i := range v.NumField() {
		f, name := v.Field(i), v.Type().Field(i).Name
		switch {
		case f.Type() == reflect.TypeFor[time.Duration]():
			d := time.Duration(i+1) * time.Hour
			f.SetInt(int64(d))
			want = append(want, "="+d.String())
		case name == "SASLPassword":
			f.SetString("pw-Xyzzy")
		case f.Kind() == reflect.String:
			f.SetString("v-" + name)
			want = append(want, "=v-"+name)
		case f.Kind() == reflect.Int:
			f.SetInt(int64(1000 + i))
			want = append(want, fmt.Sprintf("=%d", 1000+i))
		case f.Kind() == reflect.Bool:
			f.SetBool(true)
			bools++
		case f.Type() == reflect.TypeFor[[]string]():
			f.Set(reflect.ValueOf([]string{"v-" + name}))
			want = append(want, "=[v-"+name+"]")
		case f.Type() == reflect.TypeFor[[]time.Duration]():
			f.Set(reflect.ValueOf([]time.Duration{time.Duration(i+1) * time.Minute}))
			want = append(want, fmt.Sprintf("=[%v]", time.Duration(i+1)*time.Minute))
		default:
			t.Fatalf("field %s of type %s: teach this test its kind", name, f.Type())
		}
	}
	s := c.String()
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("Config.String() does not print %q:\n%s", w, s)
		}
	}
	if strings.Contains(s, "pw-Xyzzy") || !strings.Contains(s, "sasl_password=[set]") {
		t.Errorf("the password must print as [set]:\n%s", s)
	}
	if n := strings.Count(s, "=true"); n != bools {
		t.Errorf("%d bool settings print true, want %d:\n%s", n, bools, s)
	}
}

// The start-up line prints the settings in force: what the Config leaves
// to sarama shows sarama's value.
func TestEffectiveConfigFillsSaramaDefaults(t *testing.T) {
	t.Parallel()
	c, err := configFrom(merge(validEnv(), map[string]string{"KAFKA_INITIAL_OFFSET": "latest"}))
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(c, handler.HandlerFunc(func(context.Context, *handler.Message) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	def := sarama.NewConfig()
	s := w.effectiveConfig().String()
	for _, want := range []string{
		"session_timeout=" + def.Consumer.Group.Session.Timeout.String(), "heartbeat_interval=" + def.Consumer.Group.Heartbeat.Interval.String(),
		"rebalance_timeout=" + def.Consumer.Group.Rebalance.Timeout.String(), "metadata_refresh=" + def.Metadata.RefreshFrequency.String(),
		"version=" + def.Version.String(), "initial_offset=newest",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("the start-up settings do not say %q:\n%s", want, s)
		}
	}
}
