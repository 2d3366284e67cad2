package retry

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kafkaworker/kafkaworker/handler"
)

func TestReadTierHeaders(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	const delay = 10 * time.Second
	ms := func(tm time.Time) string { return strconv.FormatInt(tm.UnixMilli(), 10) }
	year3000 := time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
	capped := now.Add(delay)
	s := func(v string) *string { return &v }
	i64 := func(n int64) *string { return s(strconv.FormatInt(n, 10)) }

	cases := []struct {
		name          string
		attempt, nb   *string // header values; nil: absent
		delay         time.Duration
		wantAttempts  int
		wantNotBefore time.Time
		problems      []string // one substring per expected problem, in order
	}{
		{name: "absent headers"},
		{name: "normal values", attempt: s("2"), nb: s(ms(now.Add(5 * time.Second))),
			wantAttempts: 2, wantNotBefore: now.Add(5 * time.Second)},
		{name: "due exactly at now + delay", nb: s(ms(capped)), wantNotBefore: capped},
		{name: "within the clock-skew margin", nb: s(ms(capped.Add(tierClockSkew))), wantNotBefore: capped.Add(tierClockSkew)},
		{name: "just past the clock-skew margin", nb: s(ms(capped.Add(tierClockSkew + time.Millisecond))),
			wantNotBefore: capped, problems: []string{HeaderNotBefore + ` "` + ms(capped.Add(tierClockSkew+time.Millisecond)) + `"`}},
		{name: "in the past", nb: s(ms(now.Add(-time.Hour))), wantNotBefore: now.Add(-time.Hour)},
		{name: "year 3000", nb: s(ms(year3000)), wantNotBefore: capped,
			problems: []string{`kw-not-before "32503680000000" (3000-01-01T00:00:00Z) is later than now + the tier's delay 10s (+1s allowed for clock skew); due in 10s instead`}},
		{name: "MaxInt64 ms", nb: i64(math.MaxInt64), wantNotBefore: capped, problems: []string{`"9223372036854775807"`}},
		{name: "far future, no delay (zero or negative)", nb: s(ms(year3000)), delay: -1, wantNotBefore: now, problems: []string{"due in 0s"}},
		{name: "-1", nb: s("-1")},
		{name: "zero", nb: s("0")},
		{name: "MinInt64 ms", nb: i64(math.MinInt64)},
		{name: "garbage not-before", nb: s("soon"), problems: []string{`kw-not-before "soon" is not a unix time in ms; due now`}},
		{name: "empty not-before", nb: s(""), problems: []string{`kw-not-before "" is not`}},
		{name: "leading + not-before", nb: s("+" + ms(now)), problems: []string{"not a unix time"}},
		{name: "whitespace not-before", nb: s(" " + ms(now)), problems: []string{"not a unix time"}},
		{name: "trailing newline not-before", nb: s(ms(now) + "\n"), problems: []string{`\n"`}},
		{name: "not-before beyond int64", nb: s("99999999999999999999"), problems: []string{"not a unix time"}},
		{name: "not-before as RFC 3339", nb: s("2025-06-01T12:00:00Z"), problems: []string{"not a unix time"}},
		{name: "garbage attempt", attempt: s("three"), problems: []string{`kw-attempt "three" is not a decimal count; counted as 0 deliveries`}},
		{name: "empty attempt", attempt: s(""), problems: []string{`kw-attempt "" is not`}},
		{name: "leading + attempt", attempt: s("+3"), problems: []string{`"+3" is not a decimal count`}},
		{name: "whitespace attempt", attempt: s(" 3"), problems: []string{`" 3" is not a decimal count`}},
		{name: "leading zeros attempt", attempt: s("003"), wantAttempts: 3},
		{name: "negative attempt", attempt: s("-1"), problems: []string{`kw-attempt "-1" is negative`}},
		{name: "MinInt64 attempt", attempt: i64(math.MinInt64), problems: []string{"is negative"}},
		{name: "huge attempt", attempt: s("123456789012"), problems: []string{`kw-attempt "123456789012" is above 1048576; counted as 0 deliveries`}},
		{name: "MaxInt64 attempt", attempt: i64(math.MaxInt64), problems: []string{`"9223372036854775807" is above 1048576`}},
		{name: "attempt beyond int64", attempt: s("9223372036854775808"), problems: []string{"is not a decimal count"}},
		{name: "attempt exactly at the maximum", attempt: s(strconv.Itoa(MaxAttempt)), wantAttempts: MaxAttempt},
		{name: "attempt just above the maximum", attempt: s(strconv.Itoa(MaxAttempt + 1)), problems: []string{"is above"}},
		{name: "both bad, one problem each", attempt: i64(math.MaxInt64), nb: s(ms(year3000)), wantNotBefore: capped,
			problems: []string{"kw-attempt", "kw-not-before"}},
		{name: "long value quoted in part", attempt: s(strings.Repeat("9", 5000)),
			problems: []string{`"` + strings.Repeat("9", maxProblemValue) + `"... (5000 bytes) is not a decimal count`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			msg := &handler.Message{Topic: "t.g.retry.1", Value: []byte("SECRET-PAYLOAD"),
				Headers: []handler.Header{{Key: "traceparent", Value: []byte("00-abc")}}}
			if c.attempt != nil {
				msg.Headers = append(msg.Headers, handler.Header{Key: HeaderAttempt, Value: []byte(*c.attempt)})
			}
			if c.nb != nil {
				msg.Headers = append(msg.Headers, handler.Header{Key: HeaderNotBefore, Value: []byte(*c.nb)})
			}
			d := delay
			if c.delay != 0 {
				d = c.delay
			}
			var got struct {
				attempts  int
				notBefore time.Time
				problems  []string
			}
			got.attempts, got.notBefore, got.problems = ReadTierHeaders(msg.Headers, d, now)
			if got.attempts != c.wantAttempts {
				t.Errorf("attempts = %d, want %d", got.attempts, c.wantAttempts)
			}
			if !got.notBefore.Equal(c.wantNotBefore) || got.notBefore.IsZero() != c.wantNotBefore.IsZero() {
				t.Errorf("notBefore = %v, want %v", got.notBefore, c.wantNotBefore)
			}
			if len(got.problems) != len(c.problems) {
				t.Fatalf("problems %q, want %d matching %q", got.problems, len(c.problems), c.problems)
			}
			for i, p := range got.problems {
				if !strings.Contains(p, c.problems[i]) {
					t.Errorf("problem %d %q does not contain %q", i, p, c.problems[i])
				}
				if strings.Contains(p, "SECRET") || len(p) > 250 {
					t.Errorf("problem %d quotes the payload or is too long (%d bytes): %q", i, len(p), p)
				}
			}
			// Whatever the headers say: the wait is bounded by the tier's
			// delay and the margin, and the count leaves room to add to.
			if limit := now.Add(max(d, 0) + tierClockSkew); got.notBefore.After(limit) {
				t.Errorf("notBefore %v after now + delay + skew (%v)", got.notBefore, limit)
			}
			if got.attempts < 0 || got.attempts > MaxAttempt {
				t.Errorf("attempts %d out of [0, %d]", got.attempts, MaxAttempt)
			}
			// The worker reads kw-attempt as ReadInfo does, which
			// publish uses on the next hop.
			hs := append(slices.Clone(msg.Headers), handler.Header{Key: HeaderOriginalTopic, Value: []byte("t")})
			info, _ := ReadInfo(hs)
			if info.Attempt != got.attempts {
				t.Errorf("ReadInfo reads kw-attempt as %d, ReadTierHeaders as %d", info.Attempt, got.attempts)
			}
		})
	}
}

// The last of repeated headers counts, as handler.Message.Header and
// ReadInfo read them.
func TestReadTierHeadersLastHeaderWins(t *testing.T) {
	t.Parallel()
	now := time.Now()
	msg := &handler.Message{Headers: []handler.Header{
		{Key: HeaderAttempt, Value: []byte("9223372036854775807")},
		{Key: HeaderAttempt, Value: []byte("4")},
	}}
	if attempts, notBefore, problems := ReadTierHeaders(msg.Headers, time.Second, now); attempts != 4 || problems != nil {
		t.Fatalf("got %d attempts, due %v, problems %q; want 4 attempts and no problem", attempts, notBefore, problems)
	}
}

// Clean headers, as every retried record carries them, cost no allocation.
func TestReadTierHeadersCleanAllocatesNothing(t *testing.T) {
	now := time.Now()
	msg := &handler.Message{Headers: []handler.Header{
		{Key: HeaderAttempt, Value: []byte("3")},
		{Key: HeaderNotBefore, Value: []byte(strconv.FormatInt(now.UnixMilli(), 10))},
	}}
	if n := testing.AllocsPerRun(100, func() { ReadTierHeaders(msg.Headers, time.Second, now) }); n != 0 {
		t.Fatalf("%v allocations per clean record, want 0", n)
	}
}
