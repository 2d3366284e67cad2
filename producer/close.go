package producer

import (
	"context"
	"log/slog"
)

// Close stops the producer: sends that begin afterwards fail with
// ErrClosed, and everything already handed over is flushed to Kafka and
// completed (its callback called) until ctx ends. It returns nil once
// every message is acknowledged or failed and the connections are
// closed. If ctx ends first, Close fails every send still unacknowledged
// with ErrCloseDeadline, cuts the producer's connections so sarama's
// retries end at once, and returns a *CloseError without waiting further:
// Close never hangs past ctx. Give it a deadline: with a context that
// never ends, a broker that stops answering holds Close for as long as
// sarama's timeouts and retries last.
//
// sarama sends its last batches when they are due: at once with the
// defaults, after Producer.Flush.Frequency when that was set through
// WithSaramaConfig, so a deadline shorter than that fails them.
//
// After a deadline the producer's connections are closed at once; sarama's
// last goroutines end within about 10s (its circuit breakers' timers).
//
// Close may be called more than once; each call waits, as above, for the
// same shutdown.
func (p *Producer) Close(ctx context.Context) error {
	p.closeOnce.Do(func() {
		close(p.closing) // sends blocked on a full buffer let go of mu
		p.mu.Lock()
		p.ap.AsyncClose()
		p.mu.Unlock()
		p.log.Info("kafkaworker producer closing: flushing what is buffered")
	})
	select {
	case <-p.drained:
		return nil
	case <-ctx.Done():
	}
	// Past the deadline: stop waiting for the broker.
	p.giveUp.Store(true)
	p.pendMu.Lock()
	left := make([]*pending, 0, len(p.pending))
	for pd := range p.pending {
		left = append(left, pd)
	}
	p.pendMu.Unlock()
	failed := 0
	for _, pd := range left {
		if pd.finish(p, -1, -1, ErrCloseDeadline) {
			failed++
		}
	}
	p.dialer.Sever()
	select {
	case <-p.drained: // everything did complete meanwhile
		if failed == 0 {
			return nil
		}
	default:
	}
	p.log.Warn("kafkaworker producer closed before every message was acknowledged", slog.Int("unacknowledged", failed), slog.Any("error", ctx.Err()))
	return &CloseError{Unacknowledged: failed, Err: ctx.Err()}
}
