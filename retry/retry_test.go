package retry

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/kafkaworker/kafkaworker/handler"
)

func TestPermanent(t *testing.T) {
	t.Parallel()
	base := errors.New("bad input")
	p := Permanent(base)
	if !IsPermanent(p) || !IsPermanent(fmt.Errorf("handling: %w", p)) {
		t.Fatal("IsPermanent must see through wrapping")
	}
	if !errors.Is(p, base) {
		t.Fatal("the wrapped error must stay reachable with errors.Is")
	}
	if got := handler.ErrorType(Permanent(fmt.Errorf("x: %w", context.DeadlineExceeded))); got != "timeout" {
		t.Fatalf("ErrorType must look through Permanent; got %q", got)
	}
	type myErr struct{ error }
	if got := handler.ErrorType(Permanent(myErr{base})); got != "retry.myErr" {
		t.Fatalf("ErrorType(Permanent(myErr)) = %q, want the wrapped type", got)
	}
	var pe *PermanentError
	if !errors.As(fmt.Errorf("handling: %w", p), &pe) || pe.Err != base || pe.Error() != "permanent: bad input" {
		t.Fatalf("errors.As must find the *PermanentError with its Err; got %#v", pe)
	}
	if !IsPermanent(&PermanentError{Err: base}) {
		t.Fatal("a PermanentError built directly is permanent too")
	}
	if got := handler.ErrorType(Permanent(base)); got != "error" {
		t.Fatalf("ErrorType(Permanent(errors.New)) = %q, want error, as before PermanentError was exported", got)
	}
	if IsPermanent(base) || IsPermanent(nil) || Permanent(nil) != nil {
		t.Fatal("only errors made by Permanent are permanent; Permanent(nil) is nil")
	}
}

func TestAttempt(t *testing.T) {
	t.Parallel()
	if Attempt(context.Background()) != 1 {
		t.Fatal("a context without an attempt is the first delivery")
	}
	if Attempt(WithAttempt(context.Background(), 4)) != 4 {
		t.Fatal("WithAttempt not read back")
	}
}

func TestHeadersRoundTripAndReplace(t *testing.T) {
	t.Parallel()
	now := time.UnixMilli(time.Now().UnixMilli())
	in := Info{
		OriginalTopic: "orders", OriginalPartition: 3, OriginalOffset: 42, OriginalTimestamp: now.Add(-time.Hour),
		Group: "billing", Attempt: 6, NotBefore: now.Add(time.Minute), Error: "boom", ErrorType: "panic", FailedAt: now,
	}
	orig := []handler.Header{{Key: "traceparent", Value: []byte("00-abc")}, {Key: "app", Value: []byte("x")}}
	once := WriteInfo(orig, in)
	in2 := in
	in2.Attempt, in2.Error, in2.NotBefore = 9, "again", time.Time{}
	twice := WriteInfo(once, in2)
	if len(twice) != len(once)-1 { // no kw-not-before the second time
		t.Fatalf("headers grew hop by hop: %d then %d", len(once), len(twice))
	}
	if twice[0].Key != "traceparent" || twice[1].Key != "app" {
		t.Fatalf("non-kw headers must be kept in order: %v", twice)
	}
	got, ok := ReadInfo(twice)
	if !ok || got != in2 {
		t.Fatalf("ReadInfo = %+v, %v; want %+v", got, ok, in2)
	}
	if _, ok := ReadInfo(orig); ok {
		t.Fatal("a message never forwarded has no Info")
	}
}

func TestErrorHeaderIsCapped(t *testing.T) {
	t.Parallel()
	hs := WriteInfo(nil, Info{OriginalTopic: "t", Error: strings.Repeat("é", 2000)})
	got, _ := ReadInfo(hs)
	if len(got.Error) > MaxErrorBytes || !utf8.ValidString(got.Error) {
		t.Fatalf("kw-error is %d bytes (valid UTF-8: %v), want at most %d", len(got.Error), utf8.ValidString(got.Error), MaxErrorBytes)
	}
}

// infoWith returns the kw-* headers of a forwarded message with header k set
// to v (k left out when v is nil).
func infoWith(k string, v *string) []handler.Header {
	hs := []handler.Header{{Key: HeaderOriginalTopic, Value: []byte("orders")}}
	if v != nil {
		hs = append(hs, handler.Header{Key: k, Value: []byte(*v)})
	}
	return hs
}

func str(s string) *string { return &s }

// kw-attempt is a count of deliveries: anything that is not a plain decimal
// in [0, MaxAttempt] reads as 0, never as a negative, wrapped or clamped
// number.
func TestReadInfoAttempt(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		v    *string
		want int
	}{
		{"absent", nil, 0},
		{"normal", str("3"), 3},
		{"zero", str("0"), 0},
		{"leading zeros", str("007"), 7},
		{"exactly MaxAttempt", str(strconv.Itoa(MaxAttempt)), MaxAttempt},
		{"MaxAttempt+1", str(strconv.Itoa(MaxAttempt + 1)), 0},
		{"huge", str("123456789012"), 0},
		{"MaxInt64", str("9223372036854775807"), 0},
		{"beyond int64", str("9223372036854775808"), 0},
		{"MinInt64", str("-9223372036854775808"), 0},
		{"negative", str("-1"), 0},
		{"empty", str(""), 0},
		{"garbage", str("three"), 0},
		{"leading plus", str("+3"), 0},
		{"leading space", str(" 3"), 0},
		{"trailing newline", str("3\n"), 0},
		{"underscore", str("1_000"), 0},
		{"hex", str("0x10"), 0},
		{"non-ASCII digit", str("٣"), 0},
		{"fraction", str("2.5"), 0},
	} {
		info, ok := ReadInfo(infoWith(HeaderAttempt, c.v))
		if !ok || info.Attempt != c.want {
			t.Errorf("%s: kw-attempt %q read as %d (ok %v), want %d", c.name, deref(c.v), info.Attempt, ok, c.want)
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return "<absent>"
	}
	return *s
}

// The three timestamp headers are read within time.Time.UnixNano's range:
// later is maxTime, earlier (and malformed) the zero time; nothing read
// wraps when converted to nanoseconds.
func TestReadInfoTimestamps(t *testing.T) {
	t.Parallel()
	maxMs, minMs := maxTime.UnixMilli(), minTime.UnixMilli()
	year3000 := time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	i64 := func(n int64) *string { return str(strconv.FormatInt(n, 10)) }
	cases := []struct {
		name string
		v    *string
		want time.Time
	}{
		{"absent", nil, time.Time{}},
		{"normal", str("1700000000123"), time.UnixMilli(1700000000123)},
		{"epoch", str("0"), time.UnixMilli(0)},
		{"-1", str("-1"), time.UnixMilli(-1)},
		{"year 3000", i64(year3000), maxTime},
		{"MaxInt64 ms", i64(math.MaxInt64), maxTime},
		{"exactly the latest", i64(maxMs), maxTime},
		{"just after the latest", i64(maxMs + 1), maxTime},
		{"exactly the earliest", i64(minMs), minTime},
		{"just before the earliest", i64(minMs - 1), time.Time{}},
		{"the zero time as WriteInfo writes it", i64(time.Time{}.UnixMilli()), time.Time{}},
		{"MinInt64 ms", i64(math.MinInt64), time.Time{}},
		{"beyond int64", str("9223372036854775808"), time.Time{}},
		{"empty", str(""), time.Time{}},
		{"garbage", str("tomorrow"), time.Time{}},
		{"leading plus", str("+1700000000123"), time.Time{}},
		{"whitespace", str(" 1700000000123"), time.Time{}},
		{"RFC 3339", str("2024-01-01T00:00:00Z"), time.Time{}},
	}
	for _, k := range []string{HeaderNotBefore, HeaderOriginalTimestamp, HeaderFailedAt} {
		for _, c := range cases {
			info, _ := ReadInfo(infoWith(k, c.v))
			got := map[string]time.Time{HeaderNotBefore: info.NotBefore,
				HeaderOriginalTimestamp: info.OriginalTimestamp, HeaderFailedAt: info.FailedAt}[k]
			if !got.Equal(c.want) || got.IsZero() != c.want.IsZero() {
				t.Errorf("%s %s: %q read as %v, want %v", k, c.name, deref(c.v), got, c.want)
			}
			if !got.IsZero() && got.UnixNano()/1e6 != got.UnixMilli() {
				t.Errorf("%s %s: %v wraps in UnixNano (%d)", k, c.name, got, got.UnixNano())
			}
		}
	}
}

// Partition and offset out of their ranges read as 0, not as the nearest
// bound strconv returns with its error.
func TestReadInfoPartitionAndOffsetOutOfRange(t *testing.T) {
	t.Parallel()
	hs := []handler.Header{
		{Key: HeaderOriginalTopic, Value: []byte("orders")},
		{Key: HeaderOriginalPartition, Value: []byte("2147483648")},
		{Key: HeaderOriginalOffset, Value: []byte("9223372036854775808")},
	}
	if info, _ := ReadInfo(hs); info.OriginalPartition != 0 || info.OriginalOffset != 0 {
		t.Fatalf("partition %d offset %d, want 0 and 0", info.OriginalPartition, info.OriginalOffset)
	}
	hs[1].Value, hs[2].Value = []byte("-1"), []byte("-1")
	if info, _ := ReadInfo(hs); info.OriginalPartition != -1 || info.OriginalOffset != -1 {
		t.Fatalf("partition %d offset %d, want -1 and -1 (in range: read as written)", info.OriginalPartition, info.OriginalOffset)
	}
}

// WriteInfo never writes a negative or wrapped kw-attempt: the count is
// kept within [0, MaxAttempt], and what it writes reads back as written.
func TestWriteInfoAttemptIsBounded(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want int }{
		{0, 0}, {1, 1}, {6, 6}, {MaxAttempt, MaxAttempt}, {MaxAttempt + 1, MaxAttempt},
		{math.MaxInt, MaxAttempt}, {-1, 0}, {math.MinInt, 0},
	} {
		hs := WriteInfo(nil, Info{OriginalTopic: "t", Attempt: c.in})
		m := handler.Message{Headers: hs}
		v, _ := m.Header(HeaderAttempt)
		if string(v) != strconv.Itoa(c.want) {
			t.Errorf("Attempt %d written as kw-attempt %q, want %d", c.in, v, c.want)
		}
		if got, _ := ReadInfo(hs); got.Attempt != c.want {
			t.Errorf("Attempt %d read back as %d, want %d", c.in, got.Attempt, c.want)
		}
	}
}

// WriteInfo keeps times within the range ReadInfo reads, so a time too
// far out for unix ms or nanoseconds is not written wrapped.
func TestWriteInfoTimesAreBounded(t *testing.T) {
	t.Parallel()
	now := time.UnixMilli(time.Now().UnixMilli())
	for _, c := range []struct {
		name     string
		in, want time.Time
	}{
		{"now", now, now},
		{"year 3000", time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), maxTime},
		{"beyond unix ms", time.Unix(1<<62, 0), maxTime},           // UnixMilli would wrap
		{"long before unix ms", time.Unix(-1<<62, 0), time.Time{}}, // likewise
		{"year 1500", time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC), time.Time{}},
		{"zero", time.Time{}, time.Time{}},
	} {
		in := Info{OriginalTopic: "t", OriginalTimestamp: c.in, NotBefore: c.in, FailedAt: c.in}
		hs := WriteInfo(nil, in)
		m := handler.Message{Headers: hs}
		for _, k := range []string{HeaderOriginalTimestamp, HeaderFailedAt} {
			v, _ := m.Header(k)
			ms, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil || ms > maxTime.UnixMilli() {
				t.Errorf("%s: %s written as %q", c.name, k, v)
			}
		}
		got, _ := ReadInfo(hs)
		for k, g := range map[string]time.Time{"OriginalTimestamp": got.OriginalTimestamp, "NotBefore": got.NotBefore, "FailedAt": got.FailedAt} {
			if !g.Equal(c.want) || g.IsZero() != c.want.IsZero() {
				t.Errorf("%s: %s read back as %v, want %v", c.name, k, g, c.want)
			}
		}
	}
	// A zero Info (but for its topic) goes through unchanged.
	in := Info{OriginalTopic: "t"}
	if got, _ := ReadInfo(WriteInfo(nil, in)); got != in {
		t.Fatalf("zero Info read back as %+v", got)
	}
}

// Whatever the headers hold, ReadInfo gives an attempt in [0, MaxAttempt]
// and times within range, and WriteInfo then ReadInfo gives the same Info.
func FuzzReadInfo(f *testing.F) {
	for _, s := range []string{"", "1", "-1", "+1", " 1", "1048576", "1048577", "9223372036854775807",
		"-9223372036854775808", "32503680000000", "99999999999999999999", "x"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, attempt, ts string) {
		hs := []handler.Header{{Key: HeaderOriginalTopic, Value: []byte("t")},
			{Key: HeaderAttempt, Value: []byte(attempt)}, {Key: HeaderNotBefore, Value: []byte(ts)},
			{Key: HeaderOriginalTimestamp, Value: []byte(ts)}, {Key: HeaderFailedAt, Value: []byte(ts)}}
		info, _ := ReadInfo(hs)
		if info.Attempt < 0 || info.Attempt > MaxAttempt {
			t.Fatalf("kw-attempt %q read as %d", attempt, info.Attempt)
		}
		for _, tm := range []time.Time{info.NotBefore, info.OriginalTimestamp, info.FailedAt} {
			if !tm.IsZero() && (tm.After(maxTime) || tm.Before(minTime)) {
				t.Fatalf("%q read as %v, out of range", ts, tm)
			}
		}
		again, _ := ReadInfo(WriteInfo(nil, info))
		if again.Attempt != info.Attempt || !again.NotBefore.Equal(info.NotBefore) ||
			!again.OriginalTimestamp.Equal(info.OriginalTimestamp) || !again.FailedAt.Equal(info.FailedAt) {
			t.Fatalf("%+v read back as %+v", info, again)
		}
	})
}
