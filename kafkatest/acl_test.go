package kafkatest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/kafkaworker/kafkaworker/kafkatest"
)

// A user WithACLs binds may do what its ACLs allow, and Grant and Revoke
// change that while the cluster runs; the superuser is never bound.
func TestACLsGrantAndRevoke(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := kafkatest.NewCluster(kafkatest.WithSASL("PLAIN", "admin", "admin-pw"), kafkatest.WithACLs(),
		kafkatest.WithUser("PLAIN", "bob", "bob-pw", kafkatest.AllowTopic("", "t", kafkatest.OpDescribe)...))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.CreateTopic(ctx, "t", 1); err != nil {
		t.Fatalf("the superuser is not bound by ACLs: %v", err)
	}
	bob, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs()...), kgo.DisableIdempotentWrite(),
		kgo.SASL(plain.Auth{User: "bob", Pass: "bob-pw"}.AsMechanism()))
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	produce := func() error {
		return bob.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte("v")}).FirstErr()
	}
	if err := produce(); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("bob without Write on t: produce returned %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	write := kafkatest.AllowTopic("bob", "t", kafkatest.OpWrite)
	if err := c.Grant(ctx, write...); err != nil {
		t.Fatal(err)
	}
	if err := produce(); err != nil {
		t.Fatalf("bob after Grant(Write on t): %v", err)
	}
	if err := c.Revoke(ctx, write...); err != nil {
		t.Fatal(err)
	}
	if err := produce(); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("bob after Revoke(Write on t): produce returned %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	// A deny wins over an allow.
	if err := c.Grant(ctx, append(write, kafkatest.ACL{User: "bob", Resource: kafkatest.ResourceTopic, Name: "t", Operation: kafkatest.OpWrite, Deny: true})...); err != nil {
		t.Fatal(err)
	}
	if err := produce(); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("bob with Write both allowed and denied: produce returned %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
}

func TestACLOptionsMisuse(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		opts []kafkatest.Option
		want string
	}{
		"acls without a superuser": {[]kafkatest.Option{kafkatest.WithACLs()}, "WithACLs and WithUser need WithSASL"},
		"user acls without WithACLs": {[]kafkatest.Option{kafkatest.WithSASL("PLAIN", "a", "b"),
			kafkatest.WithUser("PLAIN", "bob", "pw", kafkatest.AllowGroup("", "g", kafkatest.OpRead)...)}, "add WithACLs"},
		"unknown mechanism": {[]kafkatest.Option{kafkatest.WithSASL("PLAIN", "a", "b"), kafkatest.WithUser("GSSAPI", "bob", "pw")}, `WithUser("GSSAPI")`},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := kafkatest.NewCluster(tc.opts...)
			if err == nil {
				c.Close()
				t.Fatalf("NewCluster succeeded, want an error saying %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
	c, err := kafkatest.NewCluster()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Grant(context.Background(), kafkatest.AllowCluster("bob", kafkatest.OpCreate)...); err == nil || !strings.Contains(err.Error(), "start it WithACLs") {
		t.Fatalf("Grant on a cluster without ACLs: %v, want an error saying to start it WithACLs", err)
	}
}
