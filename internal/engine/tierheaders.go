package engine

import (
	"fmt"
	"strconv"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
	"github.com/kafkaworker/kafkaworker/retry"
)

// tierClockSkew is how far past now + the tier's delay a kw-not-before may
// lie and still be taken as written: the worker that wrote it (another
// instance, another host) may run that much ahead of this one's clock.
// Beyond it the due time is capped, so a record waits at most its tier's
// delay plus this, never longer.
const tierClockSkew = time.Second

// maxProblemValue caps how much of a header's value a problem quotes.
const maxProblemValue = 40

// tierHeaders is what a retry tier's record says about itself, corrected
// where the headers could not be trusted.
type tierHeaders struct {
	attempts  int       // deliveries before this hop, from kw-attempt: 0 to retry.MaxAttempt
	notBefore time.Time // due time, from kw-not-before; zero: due now
	problems  []string  // one per header corrected, for a WARN line; nil when none was
}

// readTierHeaders reads kw-attempt and kw-not-before from msg, a record
// consumed from a retry tier whose configured delay is tierDelay, at now.
// It corrects what no worker would have written, so that one bad record
// can neither wait forever, holding its partition's oldest offset and so
// its in-flight budget and its commits, nor make the delivery count wrap:
//
//   - kw-not-before later than now + tierDelay + tierClockSkew (1s, for
//     the writer's clock running ahead) is capped at now + tierDelay;
//   - kw-not-before that is not a decimal unix-ms value (empty, text, a
//     '+' or spaces, beyond int64) is ignored: due now;
//   - kw-not-before of zero or below is due now (notBefore zero; no
//     problem: it is past), and any other past one is kept as written,
//     which notDue also takes as due now;
//   - kw-attempt that is not a plain decimal, is negative, or is above
//     retry.MaxAttempt reads as 0.
//
// Each correction adds one problem naming the header and the value found
// (cut to a few dozen bytes), for the caller to log at WARN with the
// message's topic, partition and offset; the payload is never quoted.
// Absent headers are no problem: due now, 0 deliveries. A tierDelay of zero
// or less caps at now. The rules for kw-attempt are retry.ReadInfo's.
func readTierHeaders(msg *handler.Message, tierDelay time.Duration, now time.Time) (t tierHeaders) {
	if v, ok := msg.Header(retry.HeaderAttempt); ok {
		n, valid := parseDecimal(v)
		switch {
		case !valid:
			t.problem("%s %s is not a decimal count; counted as 0 deliveries", retry.HeaderAttempt, quote(v))
		case n < 0:
			t.problem("%s %s is negative; counted as 0 deliveries", retry.HeaderAttempt, quote(v))
		case n > retry.MaxAttempt:
			t.problem("%s %s is above %d; counted as 0 deliveries", retry.HeaderAttempt, quote(v), retry.MaxAttempt)
		default:
			t.attempts = int(n)
		}
	}
	if v, ok := msg.Header(retry.HeaderNotBefore); ok {
		ms, valid := parseDecimal(v)
		switch {
		case !valid:
			t.problem("%s %s is not a unix time in ms; due now", retry.HeaderNotBefore, quote(v))
		case ms <= 0:
			// Long past: due now, as any past due time is.
		default:
			tierDelay = max(tierDelay, 0)
			due := time.UnixMilli(ms) // valid for any int64; compared, never converted to ns
			if due.After(now.Add(tierDelay).Add(tierClockSkew)) {
				t.notBefore = now.Add(tierDelay)
				t.problem("%s %s (%s) is later than now + the tier's delay %v (+%v allowed for clock skew); due in %v instead",
					retry.HeaderNotBefore, quote(v), due.UTC().Format(time.RFC3339), tierDelay, tierClockSkew, tierDelay)
			} else {
				t.notBefore = due
			}
		}
	}
	return t
}

func (t *tierHeaders) problem(format string, args ...any) {
	t.problems = append(t.problems, fmt.Sprintf(format, args...))
}

// parseDecimal parses v as retry.WriteInfo writes numbers: an optional '-'
// and ASCII digits, nothing else. strconv alone would also take a '+'.
func parseDecimal(v []byte) (int64, bool) {
	if len(v) == 0 || v[0] == '+' {
		return 0, false
	}
	n, err := strconv.ParseInt(string(v), 10, 64) // no spaces or '_' in base 10
	return n, err == nil
}

// quote quotes v for a log line, cut to maxProblemValue bytes.
func quote(v []byte) string {
	if len(v) > maxProblemValue {
		return strconv.Quote(string(v[:maxProblemValue])) + fmt.Sprintf("... (%d bytes)", len(v))
	}
	return strconv.Quote(string(v))
}
