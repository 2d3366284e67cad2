package retry

import "errors"

// permanentError marks a failure that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return "permanent: " + e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent wraps err so the worker does not retry the message: it goes
// straight to the dead-letter topic after this delivery (or, with
// DLQ_ENABLED=false, keeps being retried in place, since a message is never
// dropped). Permanent(nil) is nil, so `return retry.Permanent(err)` is safe
// on any path. The wrapped error stays reachable with errors.Is/As.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or any error it wraps, was made by
// Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}
