package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/spf13/cobra"
)

// replayer runs one dlq replay.
type replayer struct {
	cmd    *cobra.Command
	c      *conn
	o      *replayOpts
	topic  string // the dead-letter topic
	group  string // the replay group
	txnID  string // the producer's transactional.id
	spec   readSpec
	pace   pacer
	prod   sarama.SyncProducer // transactional; nil on a dry run
	known  map[string]bool     // target topics checked to exist
	dry    []plannedReplay     // what a dry run would send
	bar    *progress
	sent   int                       // records committed
	batch  []*sarama.ProducerMessage // records of the batch (the open transaction)
	unsent int                       // batch[unsent:] are not sent in the open transaction yet
	inTxn  bool                      // a transaction is open
	// txnStart is when the open transaction began.
	txnStart time.Time
	failed   bool            // the producer is unusable: send and commit nothing more
	pos      map[int32]int64 // next DLQ offset per partition, read and sent
	commit   map[int32]int64 // what the replay group holds
}

// newReplayer checks the flags, opens the transactional producer (fencing
// an earlier run of the same replay) unless on a dry run, and reads where
// the replay group stands. Close it.
func newReplayer(cmd *cobra.Command, g *globals, c *conn, o *replayOpts) (*replayer, error) {
	rate, err := parseRate(o.rate)
	if err != nil {
		return nil, err
	}
	topic, err := o.sel.resolve(c, time.Now())
	if err != nil {
		return nil, err
	}
	r := &replayer{cmd: cmd, c: c, o: o, topic: topic, group: o.group, known: map[string]bool{},
		pos: map[int32]int64{}}
	if rate > 0 {
		r.pace.interval = time.Duration(float64(time.Second) / rate)
	}
	if r.group == "" {
		r.group = "kafkaworker-replay." + topic
	}
	r.txnID = replayTransactionalID(r.group, topic)
	if o.to != "" {
		if err := r.checkTarget(o.to); err != nil {
			return nil, err
		}
	}
	if !o.dryRun {
		// Before reading the group's offsets: InitProducerId aborts the
		// open transaction of a run this one replaces, whose offsets would
		// otherwise be pending.
		if r.prod, err = g.txnProducer(r.txnID); err != nil {
			return nil, err
		}
	}
	if err := r.plan(); err != nil {
		r.Close()
		return nil, err
	}
	if isTerminal(cmd.ErrOrStderr()) && !o.dryRun {
		r.bar = &progress{w: cmd.ErrOrStderr(), total: r.total()}
	}
	return r, nil
}

// plan reads where the replay group stands and sets what to read: from
// there (or the oldest retained record) to the current end.
func (r *replayer) plan() error {
	_, members, err := r.c.describeGroup(r.group)
	if err != nil {
		return err
	}
	if len(members) > 0 {
		return fmt.Errorf("replay group %q has %d active member(s): another replay of %s is running; wait for it, or pass another --replay-group", r.group, len(members), r.topic)
	}
	spec, err := r.c.rangeSpec(r.topic, -1, position{kind: "oldest"}, false)
	if err != nil {
		return err
	}
	parts := make([]int32, 0, len(spec.start))
	for p := range spec.start {
		parts = append(parts, p)
	}
	commits, err := r.c.stableOffsets(r.cmd.Context(), r.group, r.topic, parts, stableWait)
	if err != nil {
		return err
	}
	r.commit = map[int32]int64{}
	for p, o := range commits {
		spec.start[p] = max(spec.start[p], o)
		r.commit[p] = o
	}
	for p, s := range spec.start {
		r.pos[p] = s
	}
	r.spec = spec
	return nil
}

func (r *replayer) total() int64 {
	var n int64
	for p, s := range r.spec.start {
		n += max(r.spec.end[p]-s, 0)
	}
	return n
}

// checkTarget fails when a topic to send to does not exist: the producer,
// like the worker, never creates topics.
func (r *replayer) checkTarget(topic string) error {
	if r.known[topic] {
		return nil
	}
	if _, err := r.c.partitions(topic, -1); err != nil {
		return fmt.Errorf("cannot replay to %s: %w; pass --to an existing topic", topic, err)
	}
	r.known[topic] = true
	return nil
}

// Close closes the producer.
func (r *replayer) Close() {
	if r.prod != nil {
		_ = r.prod.Close()
	}
}

func (r *replayer) run() error {
	seen, matched, err := scanDLQ(r.cmd.Context(), r.c, &r.o.sel, r.spec, r.cmd.ErrOrStderr(), r.advance, r.add)
	if errors.Is(err, errNotDLQ) {
		return err // nothing was sent; leave no replay group behind
	}
	if err == nil {
		// Read to the end: past the last record read, a partition may hold
		// transaction markers, or records of aborted transactions, up to it.
		for p, end := range r.spec.end {
			if r.pos[p] < end {
				r.pos[p] = end
			}
		}
	}
	var ferr error
	if !r.o.dryRun {
		// Ctrl-C stops reading; what was read is still sent and committed.
		ferr = r.flush()
	}
	if r.bar != nil {
		r.bar.finish()
	}
	interrupted := err != nil && r.cmd.Context().Err() != nil
	switch {
	case errors.Is(err, errReplayFenced):
		return err
	case errors.Is(ferr, errReplayFenced):
		return ferr
	case ferr != nil && (err == nil || interrupted):
		err, interrupted = ferr, false
	case ferr != nil:
		err = errors.Join(err, ferr)
	}
	if err != nil && !interrupted {
		return fmt.Errorf("%w (%d sent before it; progress is saved in group %s)", err, r.sent, r.group)
	}
	r.report(seen, matched)
	if interrupted {
		return fmt.Errorf("interrupted after sending %d dead letter(s); progress is saved in group %s: run the same command to resume", r.sent, r.group)
	}
	return nil
}

// add queues (or, on a dry run, lists) a matching dead letter.
func (r *replayer) add(d deadLetter) error {
	to := r.o.to
	if to == "" {
		to = d.info.OriginalTopic
	}
	if err := r.checkTarget(to); err != nil {
		return fmt.Errorf("%s came from %s: %w", offsetText(d.msg.Topic, d.msg.Partition, d.msg.Offset), d.info.OriginalTopic, err)
	}
	if r.o.dryRun {
		r.dry = append(r.dry, plannedReplay{d, to})
		return nil
	}
	if err := r.pace.wait(r.cmd); err != nil {
		return err
	}
	r.batch = append(r.batch, replayMessage(d, r.o.to, time.Now()))
	// A record in the batch is always within the progress committed with
	// it: a paced send that fails is retried by committing the batch at
	// once (settle), before advance would have moved past the record, and
	// a run killed after that commit must not resume below it.
	r.pos[d.msg.Partition] = d.msg.Offset + 1
	if r.pace.interval > 0 {
		// Paced: send it now, in the open transaction.
		return r.settle(r.sendPending())
	}
	return nil
}

// advance records that a record was read (and, if it matched, queued), and
// commits the batch when it is full or, on a paced replay, when the
// transaction has been open replayCommitEvery.
func (r *replayer) advance(m *sarama.ConsumerMessage) error {
	r.pos[m.Partition] = m.Offset + 1
	if r.bar != nil {
		r.bar.step(r.sent + len(r.batch))
	}
	full := len(r.batch) >= replayBatch || (r.inTxn && time.Since(r.txnStart) >= replayCommitEvery)
	if r.o.dryRun || !full {
		return nil
	}
	return r.flush()
}

// flush commits the batch and how far reading got in one transaction.
func (r *replayer) flush() error {
	if r.failed || (!r.inTxn && len(r.batch) == 0 && len(r.progress()) == 0) {
		return nil
	}
	return r.settle(r.commitTxn())
}

// replaySummary is a replay's outcome, printed as JSON with --format json.
type replaySummary struct {
	DLQTopic    string `json:"dlq_topic"`
	ReplayGroup string `json:"replay_group"`
	Read        int    `json:"read"`
	Matched     int    `json:"matched"`
	Sent        int    `json:"sent"`
}

func (r *replayer) report(seen, matched int) {
	w := r.cmd.OutOrStdout()
	if asJSON, _ := r.o.f.json(); asJSON {
		if r.o.dryRun {
			r.printPlanJSON()
			return
		}
		_ = printJSON(w, replaySummary{r.topic, r.group, seen, matched, r.sent})
		return
	}
	target := "their original topics"
	if r.o.to != "" {
		target = r.o.to
	}
	switch {
	case r.o.dryRun:
		r.printPlan()
		fmt.Fprintf(w, "dry run: would replay %d of %d dead letter(s) read from %s to %s; nothing sent, nothing committed\n", matched, seen, r.topic, target)
	case seen == 0:
		fmt.Fprintf(w, "replayed 0 dead letters: group %s has replayed %s up to its end already (to replay with other filters, pass a new --replay-group)\n", r.group, r.topic)
	default:
		fmt.Fprintf(w, "replayed %d dead letter(s) from %s to %s (%d read, %d skipped by the filters); progress saved in group %s\n",
			r.sent, r.topic, target, seen, seen-matched, r.group)
	}
}

// plannedReplay is a dead letter a dry run would send, and where.
type plannedReplay struct {
	d  deadLetter
	to string
}

func (r *replayer) sortedPlan() []plannedReplay {
	byMsg := map[*sarama.ConsumerMessage]string{}
	var ds []deadLetter
	for _, p := range r.dry {
		byMsg[p.d.msg] = p.to
		ds = append(ds, p.d)
	}
	out := make([]plannedReplay, 0, len(ds))
	for _, d := range sortDeadLetters(ds) {
		out = append(out, plannedReplay{d, byMsg[d.msg]})
	}
	return out
}

func (r *replayer) printPlan() {
	if len(r.dry) == 0 {
		return
	}
	t := table{header: []string{"DLQ", "ORIGINAL", "TO", "KEY", "ERROR TYPE", "FAILED AT"}}
	for _, p := range r.sortedPlan() {
		d := p.d
		t.add(fmt.Sprintf("%d@%d", d.msg.Partition, d.msg.Offset),
			offsetText(d.info.OriginalTopic, d.info.OriginalPartition, d.info.OriginalOffset),
			p.to, printable(d.msg.Key), dash(d.info.ErrorType), timeText(d.info.FailedAt))
	}
	_ = t.print(r.cmd.OutOrStdout(), 0)
	fmt.Fprintln(r.cmd.OutOrStdout())
}

func (r *replayer) printPlanJSON() {
	type planned struct {
		deadLetterJSON
		To string `json:"to"`
	}
	for _, p := range r.sortedPlan() {
		_ = printJSON(r.cmd.OutOrStdout(), planned{toJSON(p.d, false), p.to})
	}
}

// commitOffsets commits offsets for group on topic, as a client outside the
// group (Kafka accepts it while the group has no members).
func commitOffsets(c *conn, group, topic string, offsets map[int32]sarama.OffsetAndMetadata) error {
	resp, err := c.admin.AlterConsumerGroupOffsets(group, map[string]map[int32]sarama.OffsetAndMetadata{topic: offsets}, nil)
	if err != nil {
		return fmt.Errorf("commit offsets of group %q: %w", group, err)
	}
	for p, kerr := range resp.Errors[topic] {
		if kerr != sarama.ErrNoError {
			return fmt.Errorf("commit offset of group %q on %s/%d: %w", group, topic, p, kerr)
		}
	}
	return nil
}

// progress draws a one-line progress bar on a terminal.
type progress struct {
	w     io.Writer
	total int64
	read  int64
	last  time.Time
}

func (p *progress) step(sent int) {
	p.read++
	if time.Since(p.last) < 100*time.Millisecond && p.read < p.total {
		return
	}
	p.last = time.Now()
	const width = 30
	filled := width
	if p.total > 0 {
		filled = int(min(p.read, p.total) * width / p.total)
	}
	fmt.Fprintf(p.w, "\r[%s%s] %d/%d read, %d sent", strings.Repeat("=", filled), strings.Repeat(" ", width-filled), p.read, p.total, sent)
}

func (p *progress) finish() { fmt.Fprintln(p.w) }
