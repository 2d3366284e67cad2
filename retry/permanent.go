package retry

import "errors"

// PermanentError marks a failure that retrying cannot fix; Permanent makes
// one. Test for it with errors.As (or IsPermanent); Err is the failure.
// handler.ErrorType looks through it (it implements handler.Transparent),
// so metrics and the kw-error-type header name the wrapped error's class.
type PermanentError struct {
	Err error
}

// Error is the wrapped error's message, prefixed "permanent: ".
func (e *PermanentError) Error() string {
	if e.Err == nil {
		return "permanent: <nil>"
	}
	return "permanent: " + e.Err.Error()
}

// Unwrap returns Err, so errors.Is and errors.As see the wrapped error.
func (e *PermanentError) Unwrap() error { return e.Err }

// Transparent marks PermanentError as a wrapper that is no failure class
// of its own (see handler.Transparent).
func (*PermanentError) Transparent() {}

// Permanent wraps err so the worker does not retry the message: it goes
// straight to the dead-letter topic after this delivery (or, with
// DLQ_ENABLED=false, keeps being retried in place, since a message is never
// dropped). Permanent(nil) is nil, so `return retry.Permanent(err)` is safe
// on any path. The wrapped error stays reachable with errors.Is/As.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err, or any error it wraps, is a
// *PermanentError.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}
