package retry

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
)

// Header names the worker writes on every message it forwards to a retry
// or dead-letter topic. Values are decimal strings or text, readable in any
// tool (kcat -J, the console consumer, ...).
const (
	HeaderOriginalTopic     = "kw-original-topic"     // first topic the message came from
	HeaderOriginalPartition = "kw-original-partition" // its partition there
	HeaderOriginalOffset    = "kw-original-offset"    // its offset there
	HeaderOriginalTimestamp = "kw-original-timestamp" // its timestamp there, unix ms
	HeaderGroup             = "kw-group"              // consumer group that forwarded it
	HeaderAttempt           = "kw-attempt"            // deliveries so far
	HeaderNotBefore         = "kw-not-before"         // unix ms; retry tiers only
	HeaderError             = "kw-error"              // the last error's text, at most MaxErrorBytes
	HeaderErrorType         = "kw-error-type"         // handler.ErrorType of the last error
	HeaderFailedAt          = "kw-failed-at"          // unix ms of the last failure
)

// MaxErrorBytes caps the kw-error header.
const MaxErrorBytes = 1024

// MaxAttempt is the largest kw-attempt WriteInfo writes: a message
// delivered more often than that (only possible with a huge
// RETRY_LOCAL_ATTEMPTS) carries MaxAttempt. ReadInfo and ReadTierHeaders
// (which the worker consuming a retry tier uses) read a negative or larger
// value as 0: no worker wrote it. The bound leaves room to add a hop's
// deliveries to a count read from a header without overflowing an int,
// even a 32-bit one.
const MaxAttempt = 1 << 20

// Times in the kw-original-timestamp, kw-not-before and kw-failed-at
// headers (unix ms) are kept, on reading and on writing, within the range
// time.Time.UnixNano can represent, so that nothing derived from a header
// (UnixNano, durations, formatting) overflows or wraps: a later time
// becomes maxTime, an earlier one the zero time.
var (
	maxTime = time.UnixMilli(math.MaxInt64 / 1_000_000) // 2262-04-11T23:47:16.854Z
	minTime = time.UnixMilli(math.MinInt64 / 1_000_000) // 1677-09-21T00:12:43.146Z
)

// Info is what the kw-* headers say about a forwarded message.
type Info struct {
	OriginalTopic     string
	OriginalPartition int32
	OriginalOffset    int64
	OriginalTimestamp time.Time
	Group             string
	Attempt           int
	NotBefore         time.Time // zero on the dead-letter topic
	Error             string
	ErrorType         string
	FailedAt          time.Time
}

// ReadInfo parses the kw-* headers. ok is false when the message carries no
// kw-original-topic, i.e. it was never forwarded by a worker.
//
// Numbers are decimal as WriteInfo writes them: an optional '-' and ASCII
// digits, nothing else (no '+', no spaces). A malformed or out-of-range
// number reads as the zero value, and so does a kw-attempt that is negative
// or above MaxAttempt. A timestamp after 2262-04-11 (the end of
// time.Time.UnixNano's range) reads as that instant, one before 1677-09-21
// as the zero time. ReadTierHeaders reads kw-attempt by the same rules and
// kw-not-before as a due time, bounded by the tier's delay.
func ReadInfo(headers []handler.Header) (info Info, ok bool) {
	raw := func(k string) []byte { v, _ := header(headers, k); return v }
	text := func(k string) string { return string(raw(k)) }
	if info.OriginalTopic = text(HeaderOriginalTopic); info.OriginalTopic == "" {
		return Info{}, false
	}
	if p, valid := parseInt(raw(HeaderOriginalPartition)); valid && p >= math.MinInt32 && p <= math.MaxInt32 {
		info.OriginalPartition = int32(p)
	}
	info.OriginalOffset, _ = parseInt(raw(HeaderOriginalOffset))
	info.OriginalTimestamp = unixMs(raw(HeaderOriginalTimestamp))
	info.Group = text(HeaderGroup)
	info.Attempt, _ = parseAttempt(raw(HeaderAttempt))
	info.NotBefore = unixMs(raw(HeaderNotBefore))
	info.Error = text(HeaderError)
	info.ErrorType = text(HeaderErrorType)
	info.FailedAt = unixMs(raw(HeaderFailedAt))
	return info, true
}

// WriteInfo returns headers with every kw-* header replaced by info's: the
// other headers (traceparent, the application's own) are kept in order, and
// a message forwarded many times carries one set of kw-* headers, not one
// per hop. The error text is cut to MaxErrorBytes; a zero NotBefore is left
// out. Attempt is written within [0, MaxAttempt], never negative or
// wrapped, and times are kept within the range ReadInfo reads, so that
// ReadInfo(WriteInfo(h, info)) gives info back with those bounds applied.
func WriteInfo(headers []handler.Header, info Info) []handler.Header {
	out := make([]handler.Header, 0, len(headers)+10)
	for _, h := range headers {
		if !strings.HasPrefix(h.Key, "kw-") {
			out = append(out, h)
		}
	}
	add := func(k, v string) { out = append(out, handler.Header{Key: k, Value: []byte(v)}) }
	add(HeaderOriginalTopic, info.OriginalTopic)
	add(HeaderOriginalPartition, strconv.FormatInt(int64(info.OriginalPartition), 10))
	add(HeaderOriginalOffset, strconv.FormatInt(info.OriginalOffset, 10))
	add(HeaderOriginalTimestamp, formatMs(info.OriginalTimestamp))
	add(HeaderGroup, info.Group)
	add(HeaderAttempt, strconv.Itoa(min(max(info.Attempt, 0), MaxAttempt)))
	if !info.NotBefore.IsZero() {
		add(HeaderNotBefore, formatMs(info.NotBefore))
	}
	add(HeaderError, truncate(info.Error, MaxErrorBytes))
	add(HeaderErrorType, info.ErrorType)
	add(HeaderFailedAt, formatMs(info.FailedAt))
	return out
}

// header returns the value of the last header named k, as
// handler.Message.Header finds it: when a header is repeated, the last one
// counts.
func header(headers []handler.Header, k string) ([]byte, bool) {
	m := handler.Message{Headers: headers}
	return m.Header(k)
}

// parseInt parses a decimal as WriteInfo writes it: an optional '-', then
// ASCII digits. ok is false for anything else (empty, a '+', spaces, '_',
// other digits) and for a value out of int64. Every numeric kw-* header is
// read through it, by ReadInfo and ReadTierHeaders alike.
func parseInt(v []byte) (n int64, ok bool) {
	if len(v) == 0 || v[0] == '+' { // strconv takes a '+'; WriteInfo never writes one
		return 0, false
	}
	n, err := strconv.ParseInt(string(v), 10, 64) // no spaces, no '_' in base 10
	if err != nil {
		return 0, false // ParseInt returns the nearest bound when out of range
	}
	return n, true
}

// attemptFault says why a kw-attempt value was not taken as written.
type attemptFault uint8

const (
	attemptOK         attemptFault = iota // a decimal in [0, MaxAttempt]
	attemptNotDecimal                     // not as parseInt reads numbers (also: absent, empty)
	attemptNegative                       // below 0
	attemptTooLarge                       // above MaxAttempt
)

// parseAttempt reads a kw-attempt value, for ReadInfo and ReadTierHeaders
// alike: n is the count when fault is attemptOK, else 0.
func parseAttempt(v []byte) (n int, fault attemptFault) {
	a, ok := parseInt(v)
	switch {
	case !ok:
		return 0, attemptNotDecimal
	case a < 0:
		return 0, attemptNegative
	case a > MaxAttempt:
		return 0, attemptTooLarge
	}
	return int(a), attemptOK
}

// unixMs reads a unix-ms timestamp header, clamped as clampTime does; a
// malformed one is the zero time.
func unixMs(v []byte) time.Time {
	ms, ok := parseInt(v)
	if !ok {
		return time.Time{}
	}
	// Compare in ms: time.UnixMilli of any int64 is a valid time.Time.
	switch {
	case ms > maxTime.UnixMilli():
		return maxTime
	case ms < minTime.UnixMilli():
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// clampTime keeps t within [minTime, maxTime]: later is maxTime, earlier is
// the zero time.
func clampTime(t time.Time) time.Time {
	switch {
	case t.After(maxTime):
		return maxTime
	case t.Before(minTime):
		return time.Time{}
	}
	return t
}

// formatMs writes t as unix ms, clamped as clampTime does. The zero time
// (so also any time before minTime) is written, as it always was, as its
// own unix ms, -62135596800000, which unixMs reads back as the zero time.
func formatMs(t time.Time) string {
	return strconv.FormatInt(clampTime(t).UnixMilli(), 10)
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && cut < len(s) && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut]
}
