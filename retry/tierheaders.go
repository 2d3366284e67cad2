package retry

import (
	"fmt"
	"strconv"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
)

// tierClockSkew is how far past now + the tier's delay a kw-not-before may
// lie and still be taken as written by ReadTierHeaders: the worker that
// wrote it (another instance, another host) may run that much ahead of the
// reader's clock. Beyond it the due time is capped, so a record waits at
// most its tier's delay plus this, never longer.
const tierClockSkew = time.Second

// maxProblemValue caps how much of a header's value a problem quotes.
const maxProblemValue = 40

// ReadTierHeaders reads kw-attempt and kw-not-before from headers, those of
// a record consumed from a retry tier whose configured delay is tierDelay,
// at now. It is the reader the worker uses on a retry tier; tools that
// want the headers as written use ReadInfo.
//
// attempts is the number of deliveries before this hop, in [0, MaxAttempt];
// notBefore is the record's due time, the zero time meaning due now. Both
// are corrected where no worker would have written the value, so that one
// bad record can neither wait forever (holding its partition's oldest
// offset, and so its in-flight budget and its commits) nor make the
// delivery count wrap:
//
//   - kw-not-before later than now + tierDelay + 1s (a margin for the
//     writer's clock running ahead) is capped at now + tierDelay;
//   - kw-not-before that is not a decimal unix-ms value as WriteInfo writes
//     it (empty, text, a '+' or spaces, beyond int64) is ignored: due now;
//   - kw-not-before of zero or below is due now (notBefore zero, and no
//     problem: it is past); any other past one is returned as written,
//     for the caller to take as due now;
//   - kw-attempt that is not a plain decimal, is negative, or is above
//     MaxAttempt reads as 0, exactly as ReadInfo reads it.
//
// Each correction adds one problem, a sentence naming the header and the
// value found (quoted, cut to a few dozen bytes) and what was done instead,
// for the caller to log at WARN with the record's topic, partition and
// offset; nothing but those two headers is ever quoted. problems is nil
// when nothing was corrected, and absent headers are no problem: due now,
// 0 deliveries. When a header is repeated the last one counts, as with
// handler.Message.Header and ReadInfo. A tierDelay of zero or less caps at
// now. Headers that need no correction cost no allocation.
func ReadTierHeaders(headers []handler.Header, tierDelay time.Duration, now time.Time) (attempts int, notBefore time.Time, problems []string) {
	problem := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	if v, ok := header(headers, HeaderAttempt); ok {
		n, fault := parseAttempt(v)
		switch fault {
		case attemptNotDecimal:
			problem("%s %s is not a decimal count; counted as 0 deliveries", HeaderAttempt, quote(v))
		case attemptNegative:
			problem("%s %s is negative; counted as 0 deliveries", HeaderAttempt, quote(v))
		case attemptTooLarge:
			problem("%s %s is above %d; counted as 0 deliveries", HeaderAttempt, quote(v), MaxAttempt)
		}
		attempts = n
	}
	if v, ok := header(headers, HeaderNotBefore); ok {
		ms, valid := parseInt(v)
		switch {
		case !valid:
			problem("%s %s is not a unix time in ms; due now", HeaderNotBefore, quote(v))
		case ms <= 0:
			// Long past: due now, as any past due time is.
		default:
			tierDelay = max(tierDelay, 0)
			due := time.UnixMilli(ms) // valid for any int64; compared, never converted to ns
			if due.After(now.Add(tierDelay).Add(tierClockSkew)) {
				notBefore = now.Add(tierDelay)
				problem("%s %s (%s) is later than now + the tier's delay %v (+%v allowed for clock skew); due in %v instead",
					HeaderNotBefore, quote(v), due.UTC().Format(time.RFC3339), tierDelay, tierClockSkew, tierDelay)
			} else {
				notBefore = due
			}
		}
	}
	return attempts, notBefore, problems
}

// quote quotes v for a problem, cut to maxProblemValue bytes.
func quote(v []byte) string {
	if len(v) > maxProblemValue {
		return strconv.Quote(string(v[:maxProblemValue])) + fmt.Sprintf("... (%d bytes)", len(v))
	}
	return strconv.Quote(string(v))
}
