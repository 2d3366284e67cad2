package retry

import (
	"context"
	"errors"
	"fmt"
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
