package worker

import (
	"context"

	"github.com/kafkaworker/kafkaworker/internal/kconn"
)

// Connecting, bounded and cancellable: see internal/kconn.

// awaitBroker returns nil once one of the bootstrap brokers answers, an
// error naming the brokers and the last failure once ConnectTimeout has
// passed without an answer, a refused certificate or login at once, or
// ctx.Err() as soon as ctx is done.
func (w *Worker) awaitBroker(ctx context.Context) error {
	return kconn.AwaitBroker(ctx, kconn.Await{
		Brokers: w.cfg.Brokers, Timeout: w.cfg.ConnectTimeout, Sarama: w.sarama, Security: w.cfg.security(), Log: w.log,
	})
}
