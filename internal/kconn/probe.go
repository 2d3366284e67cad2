// Package kconn is how the worker and the producer connect to Kafka: the
// connection settings they share and their rules (Conn), the sarama
// configuration built from them (Conn.Sarama, and the worker's
// SaramaConfig), TLS and SASL (Security), and connecting bounded and
// cancellable (AwaitBroker, OpenCancellable, SeverableDialer).
package kconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// Connecting, bounded and cancellable.
//
// sarama.NewClient, against a broker that accepts connections but never
// answers, blocks for Net.ReadTimeout (30s) per try and retries: minutes in
// all, silently, and deaf to Run's context. So before any sarama client is
// built, AwaitBroker looks for a bootstrap broker that answers one cheap
// request, with short timeouts, logging each attempt, for at most
// Config.ConnectTimeout, and stops as soon as Run's context is cancelled.
// What connect does after that (the clients, the admin, the forwarder)
// runs through OpenCancellable, so Run does not wait for it on cancel.

const (
	// probeAttemptTimeout bounds one attempt at one broker: dial, TLS,
	// SASL and the request.
	probeAttemptTimeout = 5 * time.Second
	// probeBackoffInitial and probeBackoffMax bound the pause after a round
	// in which no broker answered.
	probeBackoffInitial = 100 * time.Millisecond
	probeBackoffMax     = 2 * time.Second
)

// Await is what AwaitBroker needs.
type Await struct {
	Brokers  []string
	Timeout  time.Duration  // KAFKA_CONNECT_TIMEOUT
	Sarama   *sarama.Config // the clients' configuration, TLS and SASL included
	Security Security       // tells a refused login from a broker not there yet
	Log      *slog.Logger
}

// AwaitBroker returns nil once one of the bootstrap brokers answers, an
// error naming the brokers and the last failure once a.Timeout has passed
// without an answer, a refused certificate or login at once, or ctx.Err()
// as soon as ctx is done.
func AwaitBroker(ctx context.Context, a Await) error {
	start := time.Now()
	deadline := start.Add(a.Timeout)
	backoff := probeBackoffInitial
	var last error
	for attempt := 1; ; attempt++ {
		for _, addr := range a.Brokers {
			if err := ctx.Err(); err != nil {
				return err
			}
			left := time.Until(deadline)
			if left <= 0 {
				return a.noBrokerAnswered(last)
			}
			timeout := min(probeAttemptTimeout, left)
			a.Log.Info("connecting to Kafka", slog.String("broker", addr), slog.Int("attempt", attempt), slog.Duration("timeout", timeout))
			err := ProbeBroker(ctx, a.Sarama, addr, timeout)
			if err == nil {
				a.Log.Info("Kafka broker answered", slog.String("broker", addr), slog.Int("attempt", attempt),
					slog.Duration("elapsed", time.Since(start).Round(time.Millisecond)))
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// A refused certificate or login is not cured by waiting: fail now.
			if ferr := a.Security.AuthFailure(addr, err, func() bool {
				anon := *a.Sarama
				anon.Net.SASL.Enable = false
				return ProbeBroker(ctx, &anon, addr, timeout) == nil
			}); ferr != nil {
				a.Log.Error("Kafka broker refused the connection's credentials", slog.String("broker", addr), slog.Any("error", ferr))
				return ferr
			}
			last = fmt.Errorf("%s: %w", addr, err)
			a.Log.Warn("Kafka broker did not answer", slog.String("broker", addr), slog.Int("attempt", attempt), slog.Any("error", err))
		}
		left := time.Until(deadline)
		if left <= 0 {
			return a.noBrokerAnswered(last)
		}
		pause := time.NewTimer(min(backoff, left))
		select {
		case <-ctx.Done():
			pause.Stop()
			return ctx.Err()
		case <-pause.C:
		}
		backoff = min(2*backoff, probeBackoffMax)
	}
}

func (a Await) noBrokerAnswered(last error) error {
	if last == nil {
		last = errors.New("no attempt finished")
	}
	return fmt.Errorf("kafkaworker: no broker answered within %v (KAFKA_CONNECT_TIMEOUT) at %v: last error: %w; "+
		"check KAFKA_BROKERS, network and TLS/SASL settings", a.Timeout, a.Brokers, last)
}

// ProbeBroker connects to addr on a connection of its own, as sarama's
// clients will (dial, TLS, SASL and the ApiVersions handshake, from a copy
// of base), and sends one ApiVersions request. It gives up after timeout,
// or as soon as ctx is done, by closing the connection under sarama's feet:
// a sarama.Broker blocked reading holds the lock Broker.Close needs, so
// closing the socket is the only way to make that read return before
// Net.ReadTimeout. Nothing it starts outlives it.
func ProbeBroker(ctx context.Context, base *sarama.Config, addr string, timeout time.Duration) error {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dialer := newProbeDialer(actx, base)
	conf := *base
	conf.Net.DialTimeout, conf.Net.ReadTimeout, conf.Net.WriteTimeout = timeout, timeout, timeout
	conf.Net.Proxy.Enable, conf.Net.Proxy.Dialer = true, dialer
	b := sarama.NewBroker(addr)
	done := make(chan error, 1)
	go func() { done <- askAPIVersions(b, &conf) }()
	select {
	case err := <-done:
		return err
	case <-actx.Done():
		dialer.closeAll() // the blocked read or write fails at once
		<-done
		if err := ctx.Err(); err != nil {
			return err
		}
		return fmt.Errorf("no answer within %v", timeout)
	}
}

// askAPIVersions opens b, waits for the connection (and TLS and SASL) and
// asks the broker for its API versions. Any answer will do, even an error
// code: the broker is there and speaks Kafka. It closes b before returning.
func askAPIVersions(b *sarama.Broker, conf *sarama.Config) error {
	if err := b.Open(conf); err != nil {
		return err
	}
	defer func() { _ = b.Close() }()
	if ok, err := b.Connected(); !ok { // waits for Open to finish
		if err == nil {
			err = sarama.ErrNotConnected
		}
		return err
	}
	if !conf.Version.IsAtLeast(sarama.V0_10_0_0) {
		return nil // ApiVersions does not exist before 0.10: the connection has to do
	}
	req := &sarama.ApiVersionsRequest{Version: 0}
	if conf.Version.IsAtLeast(sarama.V2_4_0_0) {
		req.Version, req.ClientSoftwareName, req.ClientSoftwareVersion = 3, "kafkaworker-probe", "1"
	}
	_, err := b.ApiVersions(req)
	return err
}

// probeDialer is the dialer of one probe; closeAll closes every connection
// it made, and every one it makes afterwards.
type probeDialer struct {
	ctx  context.Context
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu     sync.Mutex
	conns  []net.Conn
	closed bool
}

// newProbeDialer dials as sarama would with s: through s's proxy dialer
// when one is set (cancelled with ctx only if it has a DialContext method),
// or directly with s's keep-alive and local address.
func newProbeDialer(ctx context.Context, s *sarama.Config) *probeDialer {
	nd := &net.Dialer{KeepAlive: s.Net.KeepAlive, LocalAddr: s.Net.LocalAddr}
	d := &probeDialer{ctx: ctx, dial: nd.DialContext}
	if s.Net.Proxy.Enable && s.Net.Proxy.Dialer != nil {
		switch pd := s.Net.Proxy.Dialer.(type) {
		case interface {
			DialContext(ctx context.Context, network, addr string) (net.Conn, error)
		}:
			d.dial = pd.DialContext
		default:
			d.dial = func(_ context.Context, network, addr string) (net.Conn, error) { return pd.Dial(network, addr) }
		}
	}
	return d
}

// Dial implements sarama's proxy.Dialer.
func (d *probeDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := d.dial(d.ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	d.conns = append(d.conns, c)
	return c, nil
}

func (d *probeDialer) closeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	for _, c := range d.conns {
		_ = c.Close()
	}
}

// OpenCancellable runs open, which cannot be cancelled (sarama's
// constructors take no context), on a goroutine of its own, and returns
// what it returns, or ctx.Err() as soon as ctx is done. In that case the
// goroutine goes on until open returns, closes whatever open opened with
// closeFn, logs that at Debug and exits.
func OpenCancellable[T any](ctx context.Context, log *slog.Logger, open func() (T, error), closeFn func(T)) (T, error) {
	type result struct {
		v   T
		err error
	}
	res := make(chan result) // unbuffered: a result is either taken or closed here, never both
	abandoned := make(chan struct{})
	go func() {
		v, err := open()
		select {
		case res <- result{v, err}:
		case <-abandoned:
			if err == nil {
				closeFn(v)
			}
			log.Debug("connecting, abandoned when Run's context was cancelled, has finished; what it opened is closed", slog.Any("error", err))
		}
	}()
	select {
	case r := <-res:
		return r.v, r.err
	case <-ctx.Done():
		close(abandoned)
		var zero T
		return zero, ctx.Err()
	}
}
