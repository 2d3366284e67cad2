package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/internal/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestDev(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out, errb testutil.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"dev", "--addr", "127.0.0.1:0", "--topic", "orders:3", "--topic", "events"}, strings.NewReader(""), &out, &errb)
	}()
	export := regexp.MustCompile(`export KAFKA_BROKERS=(127\.0\.0\.1:\d+)`)
	testutil.WaitFor(t, 20*time.Second, "dev to print KAFKA_BROKERS", func() bool { return export.MatchString(out.String()) })
	addr := export.FindStringSubmatch(out.String())[1]
	if strings.HasSuffix(addr, ":0") {
		t.Fatalf("dev printed the unbound port: %s", addr)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	details, err := kadm.NewClient(cl).ListTopics(ctx)
	cl.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(details["orders"].Partitions) != 3 || len(details["events"].Partitions) != 1 {
		t.Errorf("topics on the dev broker: %v", details.Names())
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("dev exited %d after interrupt: %s", code, errb.String())
	}
}

func TestDevBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dev", "--topic", "orders:zero"}, `--topic "orders:zero"`},
		{[]string{"dev", "--topic", ":3"}, "name is empty"},
		{[]string{"dev", "--addr", "256.0.0.1:9092"}, "--addr 256.0.0.1:9092"},
	} {
		var out, errb testutil.Buffer
		code := run(t.Context(), tc.args, strings.NewReader(""), &out, &errb)
		checkFailure(t, tc.args, result{out.String(), errb.String(), code}, tc.want)
	}
}
