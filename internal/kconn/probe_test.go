package kconn

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
)

// quietListener accepts connections and never answers. requests is closed
// when the first bytes arrive, clientClosed when a client closes.
func quietListener(t *testing.T) (addr string, requests, clientClosed <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	req, closed := make(chan struct{}), make(chan struct{})
	var reqOnce, closedOnce sync.Once
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 1024)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						reqOnce.Do(func() { close(req) })
					}
					if err != nil {
						if errors.Is(err, io.EOF) {
							closedOnce.Do(func() { close(closed) })
						}
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), req, closed
}

func closedWithin(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

func TestConnectProbeGivesUpOnSilentBroker(t *testing.T) {
	t.Parallel()
	addr, _, clientClosed := quietListener(t)
	began := time.Now()
	err := ProbeBroker(context.Background(), sarama.NewConfig(), addr, 300*time.Millisecond)
	took := time.Since(began)
	if err == nil || !strings.Contains(err.Error(), "no answer within 300ms") {
		t.Fatalf("probe of a silent broker: %v, want no answer within 300ms", err)
	}
	if took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("probe took %v, want about its 300ms timeout", took)
	}
	if !closedWithin(clientClosed, time.Second) {
		t.Error("the probe did not close its connection")
	}
}

func TestConnectProbeStopsOnCancel(t *testing.T) {
	t.Parallel()
	addr, requests, clientClosed := quietListener(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ProbeBroker(ctx, sarama.NewConfig(), addr, time.Minute) }()
	if !closedWithin(requests, 10*time.Second) {
		t.Fatal("the probe sent nothing")
	}
	cancel() // the probe is blocked reading an answer that never comes
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled probe returned %v, want context.Canceled", err)
		}
	case <-time.After(time.Second):
		t.Fatal("the probe did not return within 1s of its context being cancelled")
	}
	if !closedWithin(clientClosed, time.Second) {
		t.Error("the cancelled probe did not close its connection")
	}
}

func TestConnectProbeAnsweringBroker(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, v := range []string{"", "0.11.0.0", "3.6.0"} {
		s := sarama.NewConfig()
		if v != "" {
			if s.Version, err = sarama.ParseKafkaVersion(v); err != nil {
				t.Fatal(err)
			}
		}
		if err := ProbeBroker(context.Background(), s, c.ListenAddrs()[0], 5*time.Second); err != nil {
			t.Errorf("probe (version %q) of an answering broker: %v", v, err)
		}
	}
}

func TestConnectOpenCancellable(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	t.Run("result", func(t *testing.T) {
		t.Parallel()
		v, err := OpenCancellable(context.Background(), log, func() (int, error) { return 7, nil },
			func(int) { t.Error("closed a result that was returned") })
		if v != 7 || err != nil {
			t.Fatalf("got %v, %v", v, err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		release, closed := make(chan struct{}), make(chan int, 1)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := OpenCancellable(ctx, log, func() (int, error) { <-release; return 7, nil }, func(v int) { closed <- v })
			done <- err
		}()
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v, want context.Canceled", err)
			}
		case <-time.After(time.Second):
			t.Fatal("did not return within 1s of the cancel while open was blocked")
		}
		close(release) // open returns late: what it opened must be closed
		select {
		case v := <-closed:
			if v != 7 {
				t.Fatalf("closed %v, want what open returned (7)", v)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("what the abandoned open returned was not closed")
		}
	})
}
