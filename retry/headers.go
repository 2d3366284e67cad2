package retry

import (
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
// kw-original-topic, i.e. it was never forwarded by a worker. Malformed
// numbers read as zero values.
func ReadInfo(headers []handler.Header) (info Info, ok bool) {
	get := func(k string) string {
		m := handler.Message{Headers: headers}
		v, _ := m.Header(k)
		return string(v)
	}
	if info.OriginalTopic = get(HeaderOriginalTopic); info.OriginalTopic == "" {
		return Info{}, false
	}
	p, _ := strconv.ParseInt(get(HeaderOriginalPartition), 10, 32)
	info.OriginalPartition = int32(p)
	info.OriginalOffset, _ = strconv.ParseInt(get(HeaderOriginalOffset), 10, 64)
	info.OriginalTimestamp = unixMs(get(HeaderOriginalTimestamp))
	info.Group = get(HeaderGroup)
	info.Attempt, _ = strconv.Atoi(get(HeaderAttempt))
	info.NotBefore = unixMs(get(HeaderNotBefore))
	info.Error = get(HeaderError)
	info.ErrorType = get(HeaderErrorType)
	info.FailedAt = unixMs(get(HeaderFailedAt))
	return info, true
}

// WriteInfo returns headers with every kw-* header replaced by info's: the
// other headers (traceparent, the application's own) are kept in order, and
// a message forwarded many times carries one set of kw-* headers, not one
// per hop. The error text is cut to MaxErrorBytes; a zero NotBefore is left
// out.
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
	add(HeaderOriginalTimestamp, strconv.FormatInt(info.OriginalTimestamp.UnixMilli(), 10))
	add(HeaderGroup, info.Group)
	add(HeaderAttempt, strconv.Itoa(info.Attempt))
	if !info.NotBefore.IsZero() {
		add(HeaderNotBefore, strconv.FormatInt(info.NotBefore.UnixMilli(), 10))
	}
	add(HeaderError, truncate(info.Error, MaxErrorBytes))
	add(HeaderErrorType, info.ErrorType)
	add(HeaderFailedAt, strconv.FormatInt(info.FailedAt.UnixMilli(), 10))
	return out
}

func unixMs(s string) time.Time {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || s == "" {
		return time.Time{}
	}
	return time.UnixMilli(ms)
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
