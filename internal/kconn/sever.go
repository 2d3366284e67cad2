package kconn

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// SeverableDialer dials as sarama would with the configuration it was made
// from (through its proxy dialer when one is set), and keeps the
// connections it made so that Sever can close them all under sarama's feet
// and refuse every later dial. A client that must stop by a deadline
// (producer.Close) uses it: sarama blocked on a silent broker holds locks
// that only a failing socket releases, and its retries end at once when
// no connection can be made.
type SeverableDialer struct {
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	timeout time.Duration      // sarama's Net.DialTimeout, which it applies only to its own dialer
	ctx     context.Context    // cancelled by Sever: a dial under way fails at once
	cancel  context.CancelFunc //

	mu      sync.Mutex
	conns   map[*trackedConn]struct{}
	severed bool
}

// InstallSeverableDialer makes s dial through a new SeverableDialer, which
// it returns. Call it after every other change to s's network settings.
func InstallSeverableDialer(s *sarama.Config) *SeverableDialer {
	pd := newProbeDialer(context.Background(), s)
	ctx, cancel := context.WithCancel(context.Background())
	d := &SeverableDialer{dial: pd.dial, timeout: s.Net.DialTimeout, ctx: ctx, cancel: cancel, conns: map[*trackedConn]struct{}{}}
	s.Net.Proxy.Enable, s.Net.Proxy.Dialer = true, d
	return d
}

// Dial implements sarama's proxy dialer.
func (d *SeverableDialer) Dial(network, addr string) (net.Conn, error) {
	d.mu.Lock()
	severed := d.severed
	d.mu.Unlock()
	if severed {
		return nil, net.ErrClosed
	}
	ctx, cancel := d.ctx, context.CancelFunc(func() {})
	if d.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, d.timeout)
	}
	c, err := d.dial(ctx, network, addr)
	cancel()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, d: d}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.severed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	d.conns[tc] = struct{}{}
	return tc, nil
}

// Sever closes every connection made so far and makes every later dial
// fail with net.ErrClosed.
func (d *SeverableDialer) Sever() {
	d.mu.Lock()
	d.severed = true
	d.cancel()
	conns := d.conns
	d.conns = map[*trackedConn]struct{}{}
	d.mu.Unlock()
	for c := range conns {
		_ = c.Conn.Close()
	}
}

// trackedConn forgets itself in its dialer when closed, so a long-lived
// client's reconnects do not pile up.
type trackedConn struct {
	net.Conn
	d *SeverableDialer
}

func (c *trackedConn) Close() error {
	c.d.mu.Lock()
	delete(c.d.conns, c)
	c.d.mu.Unlock()
	return c.Conn.Close()
}

// Severed reports whether Sever was called: a client's retry backoff can
// then be zero, since every attempt fails at once.
func (d *SeverableDialer) Severed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.severed
}
