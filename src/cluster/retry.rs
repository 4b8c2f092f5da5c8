//! Retrying what a busy or briefly broken API server answers, so one 429 or 500 in the middle of
//! an upgrade never aborts it.
//!
//! kube's own retry covers 429, 503 and 504 only. An API server under load, or one whose etcd
//! leader just changed, also answers 500 and 502 for a moment; client-go retries those when the
//! server sends `Retry-After`, kubectl users simply run the command again. Here the rule is:
//! - 429 Too Many Requests: always retried (API Priority and Fairness rejected the request
//!   before doing anything), after `Retry-After` when the server gives one;
//! - 500, 502, 503, 504: retried for reads and for the writes this crate makes, which are all
//!   idempotent (server-side apply, replace with a `resourceVersion` precondition, delete);
//!   a POST (create) only on 503 and 504, which mean it never reached the storage layer;
//! - connection failures: retried for reads only.
//!
//! At most [`MAX_RETRIES`] times per request, backing off from 200 ms up to 5 s.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use tower::BoxError;
use tower::retry::Policy;

/// Retries per request before the error is reported.
pub const MAX_RETRIES: u32 = 8;
const FIRST_DELAY: Duration = Duration::from_millis(200);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// The retry policy of every client this crate builds.
#[derive(Clone, Debug, Default)]
pub struct TransientRetry {
    attempt: u32,
}

impl TransientRetry {
    /// Whether an answer with `status` to a `method` request is worth repeating.
    pub fn retryable(method: &Method, status: StatusCode) -> bool {
        match status {
            StatusCode::TOO_MANY_REQUESTS => true,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => true,
            StatusCode::INTERNAL_SERVER_ERROR | StatusCode::BAD_GATEWAY => method != Method::POST,
            _ => false,
        }
    }

    fn delay(&self, retry_after: Option<Duration>) -> Duration {
        let backoff = FIRST_DELAY
            .saturating_mul(1 << self.attempt.min(6))
            .min(MAX_DELAY);
        retry_after.map_or(backoff, |r| r.min(MAX_DELAY * 6))
    }
}

fn retry_after<B>(response: &Response<B>) -> Option<Duration> {
    response
        .headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

impl<Res> Policy<Request<Body>, Response<Res>, BoxError> for TransientRetry {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        req: &mut Request<Body>,
        result: &mut Result<Response<Res>, BoxError>,
    ) -> Option<Self::Future> {
        if self.attempt >= MAX_RETRIES {
            return None;
        }
        let wait = match result {
            Ok(response) if Self::retryable(req.method(), response.status()) => {
                self.delay(retry_after(response))
            }
            Err(_) if req.method() == Method::GET => self.delay(None),
            _ => return None,
        };
        self.attempt += 1;
        Some(tokio::time::sleep(wait))
    }

    fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
        // Streaming bodies cannot be replayed; every body this crate sends is in memory.
        let body = req.body().try_clone()?;
        let mut copy = Request::builder()
            .method(req.method().clone())
            .uri(req.uri().clone())
            .version(req.version())
            .body(body)
            .ok()?;
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_answers_are_repeated() {
        use StatusCode as S;
        assert!(TransientRetry::retryable(
            &Method::GET,
            S::INTERNAL_SERVER_ERROR
        ));
        assert!(TransientRetry::retryable(&Method::PATCH, S::BAD_GATEWAY));
        assert!(TransientRetry::retryable(
            &Method::POST,
            S::TOO_MANY_REQUESTS
        ));
        assert!(TransientRetry::retryable(
            &Method::POST,
            S::SERVICE_UNAVAILABLE
        ));
        assert!(!TransientRetry::retryable(
            &Method::POST,
            S::INTERNAL_SERVER_ERROR
        ));
        assert!(!TransientRetry::retryable(&Method::GET, S::NOT_FOUND));
        assert!(!TransientRetry::retryable(&Method::PUT, S::CONFLICT));
    }

    #[test]
    fn backoff_grows_to_a_cap_and_retry_after_wins() {
        let mut p = TransientRetry::default();
        assert_eq!(p.delay(None), Duration::from_millis(200));
        p.attempt = 3;
        assert_eq!(p.delay(None), Duration::from_millis(1600));
        p.attempt = 7;
        assert_eq!(p.delay(None), MAX_DELAY);
        assert_eq!(
            p.delay(Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
    }
}
