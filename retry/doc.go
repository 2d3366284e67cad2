// Package retry holds what handlers and tools need to know about failure
// handling in kafkaworker: the Permanent error wrapper, the Attempt context
// accessor, and the headers the worker writes on every message it forwards
// to a retry or dead-letter topic.
//
// The flow of a failing message (the worker implements it; see the README):
//
//  1. In place: retried with exponential backoff and jitter, blocking only
//     its key, up to RETRY_LOCAL_ATTEMPTS deliveries.
//  2. Retry topics: still failing, it is published to retry tier 1, 2, ...
//     (one topic per delay in RETRY_TOPIC_DELAYS) and handed to the same
//     handler again no earlier than its due time. Its offset is committed
//     only once that publish is acknowledged.
//  3. Dead letter: after the last tier, or at once for an error wrapped with
//     Permanent, it is published to the dead-letter topic, again committing
//     only after the acknowledgement.
//
// A publish that fails is retried with backoff; the message is never
// dropped and its offset never committed past.
package retry
