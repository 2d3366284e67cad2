package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// keyCounts are the key counts the keys scenario sweeps.
var keyCounts = []int{1, 2, 5, 10, 20, 100, 1000, 10000}

// keys shows how the worker's parallelism follows the number of distinct
// keys on a single partition: with one key everything is serial (what raw
// sarama does on one partition whatever the keys), and from about as many
// keys as goroutines on, the pool is the limit.
//
// Each message carries its own handler time, drawn uniformly from 0–5 ms
// with a fixed seed, in the first four bytes of its value, so the ideal can
// be computed from the very durations the handler sleeps:
//
//	ideal = max(total / min(keys, concurrency), longest key chain)
//
// total / min(keys, concurrency) is the time if every goroutine that can be
// busy (one per key at most, since a key's messages run one after another,
// and never more than the pool) were busy all the time. The longest key
// chain, the sum of one key's sleeps, is a floor on its own: that key's
// messages cannot overlap. With keys ≤ concurrency the two are close (each
// key has total/keys of work on average); above, the first term dominates.
// The ideal ignores fetch latency, the in-flight window (a slow key can
// hold the window's head while others wait for room) and timer overshoot,
// so real runs land a little below 1.
func (b *bench) keys(ctx context.Context) (table, error) {
	const concurrency = 100
	n := 10_000
	if b.quick {
		n = 1_000
	}
	t := table{
		title: fmt.Sprintf("Key-count scaling: 1 partition, %s msgs, handler sleeps uniform 0–5 ms, concurrency %d", count(n), concurrency),
		header: []string{"keys", "wall (Run start → all handled)", "join", "msgs/s", "ideal wall",
			"ideal / wall", "ideal* wall (measured sleeps)", "ideal* / (wall − join)", "speed-up vs serial"},
		notes: []string{
			"ideal = max(Σ sleeps / min(keys, concurrency), longest single key's Σ sleeps), from the exact sleeps carried in the messages (mean 2.5 ms).",
			"ideal* is the same formula over the sleeps as the handler measured them: time.Sleep overshoots (by up to ~1 ms on a loaded Linux box), and no consumer can beat that.",
			"\"serial\" is Σ sleeps: what raw sarama (one message at a time per partition) needs on one partition, whatever the keys.",
			"\"join\" is Run start until the first message was handled; the ideal* ratio leaves it out, which matters for the sub-second runs.",
		},
	}
	for _, keys := range keyCounts {
		topic, total, chain, err := b.sleepTopic(ctx, n, keys)
		if err != nil {
			return table{}, err
		}
		ideal := idealWall(total, chain, keys, concurrency)
		slept := make([]atomic.Int64, keys) // measured sleep per key
		work := func(ctx context.Context, key, value []byte) {
			t0 := time.Now()
			sleepFromValue(ctx, key, value)
			slept[keyIndex(key)%keys].Add(int64(time.Since(t0)))
		}
		s := spec{topic: topic, n: n, work: work, concurrency: concurrency, timeout: 3*ideal + time.Minute}
		m, err := b.runWorker(ctx, s)
		if err != nil {
			return table{}, err
		}
		var mTotal, mChain time.Duration
		for i := range slept {
			d := time.Duration(slept[i].Load())
			mTotal += d
			mChain = max(mChain, d)
		}
		idealM := idealWall(mTotal, mChain, keys, concurrency)
		if !m.committed {
			t.notes = append(t.notes, fmt.Sprintf("keys=%d: committed offsets did **not** reach the end offsets", keys))
		}
		progress("keys=%-5d wall %s (join %s), ideal %s (measured sleeps %s), serial %s",
			keys, dur(m.total), dur(m.startup), dur(ideal), dur(idealM), dur(total))
		t.rows = append(t.rows, []string{
			count(keys), dur(m.total), dur(m.startup), rate(m.rate()), dur(ideal),
			ratio(ideal.Seconds() / m.total.Seconds()),
			dur(idealM),
			ratio(idealM.Seconds() / (m.total - m.startup).Seconds()),
			fmt.Sprintf("%.1f×", total.Seconds()/m.total.Seconds()),
		})
	}
	return t, nil
}

// sleepTopic produces n messages to a new one-partition topic, message i
// keyed i mod keys and carrying a random 0–5 ms sleep. It returns the topic,
// the sum of all sleeps, and the largest per-key sum.
func (b *bench) sleepTopic(ctx context.Context, n, keys int) (string, time.Duration, time.Duration, error) {
	topic := b.name(fmt.Sprintf("keys%d", keys))
	if err := b.cluster.CreateTopic(ctx, topic, 1); err != nil {
		return "", 0, 0, err
	}
	rng := rand.New(rand.NewPCG(42, 0)) // the same sleeps for every key count
	perKey := make([]time.Duration, keys)
	var total time.Duration
	keyBytes := make([][]byte, keys)
	for i := range keyBytes {
		keyBytes[i] = fmt.Appendf(nil, "key-%06d", i)
	}
	err := b.cluster.ProduceN(ctx, topic, n, func(i int) ([]byte, []byte) {
		us := rng.IntN(5000)
		d := time.Duration(us) * time.Microsecond
		total += d
		perKey[i%keys] += d
		v := make([]byte, 100)
		binary.BigEndian.PutUint32(v, uint32(us))
		return keyBytes[i%keys], v
	})
	if err != nil {
		return "", 0, 0, err
	}
	var chain time.Duration
	for _, d := range perKey {
		chain = max(chain, d)
	}
	return topic, total, chain, nil
}

// idealWall is the shortest possible wall time for work of the given total
// spread over keys whose longest one-key chain is chain, on a pool of
// concurrency goroutines (see keys).
func idealWall(total, chain time.Duration, keys, concurrency int) time.Duration {
	return max(total/time.Duration(min(keys, concurrency)), chain)
}

// keyIndex parses the number at the end of a "key-%06d" key.
func keyIndex(key []byte) int {
	n := 0
	for _, c := range key {
		if c >= '0' && c <= '9' {
			n = n*10 + int(c-'0')
		}
	}
	return n
}

// sleepFromValue sleeps for the microseconds in the value's first four
// bytes.
func sleepFromValue(_ context.Context, _, value []byte) {
	if len(value) >= 4 {
		time.Sleep(time.Duration(binary.BigEndian.Uint32(value)) * time.Microsecond)
	}
}
