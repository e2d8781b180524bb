//! The decisions behind retries, outlier ejection, health thresholds and circuit breaking, as
//! pure functions: the proxy keeps the state (atomics shared by workers) and asks here what to
//! do with it.

use std::time::Duration;

use http::Method;
use rustygate_config::{RetryOn, RetryPolicy};

use crate::ErrorKind;

/// How one upstream attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// A response head with this status arrived.
    Status(u16),
    /// No response: connect failure, reset, timeout or protocol error.
    Failed(ErrorKind),
    /// An HTTP/2 upstream refused the stream: it processed nothing.
    Refused,
}

impl Attempt {
    /// A 5xx, or no response at all.
    pub fn is_5xx(self) -> bool {
        match self {
            Attempt::Status(s) => s >= 500,
            Attempt::Failed(_) | Attempt::Refused => true,
        }
    }

    /// Connect failure, reset, timeout: the endpoint did not answer (Envoy's "gateway
    /// failure" for outlier detection).
    pub fn is_gateway_failure(self) -> bool {
        matches!(
            self,
            Attempt::Failed(
                ErrorKind::UpstreamConnect | ErrorKind::UpstreamReset | ErrorKind::UpstreamTimeout
            ) | Attempt::Refused
        )
    }
}

/// Methods that may be repeated without changing the outcome (RFC 9110 §9.2.2).
pub fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether `policy` retries an attempt that ended as `attempt`.
pub fn retriable(policy: &RetryPolicy, attempt: Attempt) -> bool {
    policy.retry_on.iter().any(|on| match on {
        RetryOn::ConnectFailure => {
            matches!(attempt, Attempt::Failed(ErrorKind::UpstreamConnect))
        }
        RetryOn::RefusedStream => matches!(attempt, Attempt::Refused),
        RetryOn::Reset => matches!(
            attempt,
            Attempt::Refused
                | Attempt::Failed(ErrorKind::UpstreamReset | ErrorKind::UpstreamTimeout)
        ),
        RetryOn::FiveXx => attempt.is_5xx(),
        RetryOn::GatewayError => match attempt {
            Attempt::Status(s) => matches!(s, 502..=504),
            _ => true,
        },
        RetryOn::RetriableStatusCodes => match attempt {
            Attempt::Status(s) => policy.retriable_status_codes.contains(&s),
            _ => false,
        },
    })
}

/// The wait before retry number `retry` (1-based): a random time in
/// `[0, min(base × 2^(retry-1), max)]` ("full jitter"), so that clients retrying after the
/// same outage spread out. `unit` is a random number in `[0, 1)`.
pub fn backoff(base: Duration, max: Duration, retry: u32, unit: f64) -> Duration {
    let exp = retry.saturating_sub(1).min(20);
    let ceiling = base.saturating_mul(1 << exp).min(max);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// Whether another retry may start, given the retries and requests in flight to the cluster:
/// retries stay under `budget_percent` of requests (but `min_concurrency` are always
/// allowed), and never over `max_retries`. This keeps a full outage from multiplying the load.
pub fn retry_allowed(
    retries_in_flight: usize,
    requests_in_flight: usize,
    budget_percent: u8,
    min_concurrency: usize,
    max_retries: usize,
) -> bool {
    retries_in_flight
        < retry_limit(
            requests_in_flight,
            budget_percent,
            min_concurrency,
            max_retries,
        )
}

/// How many retries may be in flight with `requests_in_flight` requests (see
/// [`retry_allowed`]).
pub fn retry_limit(
    requests_in_flight: usize,
    budget_percent: u8,
    min_concurrency: usize,
    max_retries: usize,
) -> usize {
    (requests_in_flight * usize::from(budget_percent) / 100)
        .max(min_concurrency)
        .min(max_retries)
}

/// How long the `times`-th ejection (1-based) of an endpoint lasts.
pub fn ejection_time(base: Duration, max: Duration, times: u32) -> Duration {
    base.saturating_mul(times.max(1)).min(max)
}

/// Most endpoints of `total` that may be ejected at once: `max_percent`, but at least one.
pub fn max_ejected(total: usize, max_percent: u8) -> usize {
    (total * usize::from(max_percent) / 100).max(1)
}

/// Whether so few endpoints are healthy that traffic should go to all of them.
pub fn panic_mode(healthy: usize, total: usize, threshold_percent: u8) -> bool {
    total > 0 && healthy * 100 < total * usize::from(threshold_percent)
}

/// Consecutive check results of one endpoint, and the health they add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckRun {
    /// Current health.
    pub healthy: bool,
    passes: u32,
    fails: u32,
}

impl CheckRun {
    /// Starting health.
    pub fn new(healthy: bool) -> Self {
        Self {
            healthy,
            passes: 0,
            fails: 0,
        }
    }

    /// Records a check; returns the new health when it changed.
    pub fn record(
        &mut self,
        passed: bool,
        healthy_after: u32,
        unhealthy_after: u32,
    ) -> Option<bool> {
        if passed {
            self.passes += 1;
            self.fails = 0;
            if !self.healthy && self.passes >= healthy_after {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.fails += 1;
            self.passes = 0;
            if self.healthy && self.fails >= unhealthy_after {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: &[RetryOn]) -> RetryPolicy {
        RetryPolicy {
            retry_on: on.to_vec(),
            retriable_status_codes: vec![409],
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn retry_conditions() {
        let connect = Attempt::Failed(ErrorKind::UpstreamConnect);
        let reset = Attempt::Failed(ErrorKind::UpstreamReset);
        let timeout = Attempt::Failed(ErrorKind::UpstreamTimeout);
        let p = policy(&[RetryOn::ConnectFailure]);
        assert!(retriable(&p, connect));
        assert!(!retriable(&p, reset));
        assert!(!retriable(&p, Attempt::Status(503)));
        let p = policy(&[RetryOn::FiveXx]);
        assert!(retriable(&p, Attempt::Status(500)) && retriable(&p, timeout));
        assert!(!retriable(&p, Attempt::Status(404)));
        let p = policy(&[RetryOn::GatewayError]);
        assert!(retriable(&p, Attempt::Status(503)) && !retriable(&p, Attempt::Status(500)));
        assert!(retriable(&p, reset));
        let p = policy(&[RetryOn::Reset]);
        assert!(retriable(&p, reset) && retriable(&p, timeout) && !retriable(&p, connect));
        let p = policy(&[RetryOn::RetriableStatusCodes]);
        assert!(retriable(&p, Attempt::Status(409)) && !retriable(&p, Attempt::Status(503)));
        let p = policy(&[RetryOn::RefusedStream]);
        assert!(retriable(&p, Attempt::Refused) && !retriable(&p, reset));
    }

    #[test]
    fn only_idempotent_methods_by_default() {
        assert!(
            idempotent(&Method::GET) && idempotent(&Method::PUT) && idempotent(&Method::DELETE)
        );
        assert!(!idempotent(&Method::POST) && !idempotent(&Method::PATCH));
    }

    #[test]
    fn backoff_grows_exponentially_under_a_cap_with_full_jitter() {
        let (base, max) = (Duration::from_millis(25), Duration::from_millis(250));
        assert_eq!(backoff(base, max, 1, 1.0), Duration::from_millis(25));
        assert_eq!(backoff(base, max, 3, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(base, max, 9, 1.0), max);
        assert_eq!(backoff(base, max, 40, 1.0), max);
        assert_eq!(backoff(base, max, 3, 0.5), Duration::from_millis(50));
        assert_eq!(backoff(base, max, 3, 0.0), Duration::ZERO);
    }

    #[test]
    fn the_retry_budget_bounds_retries_by_load() {
        // 100 requests in flight, 20%: 20 retries, capped by max_retries.
        assert!(retry_allowed(19, 100, 20, 3, 50));
        assert!(!retry_allowed(20, 100, 20, 3, 50));
        assert!(!retry_allowed(3, 100, 20, 3, 3));
        // Few requests: the minimum concurrency applies.
        assert!(retry_allowed(2, 1, 20, 3, 50));
        assert!(!retry_allowed(3, 1, 20, 3, 50));
    }

    #[test]
    fn ejections_grow_and_are_capped() {
        let (base, max) = (Duration::from_secs(30), Duration::from_secs(100));
        assert_eq!(ejection_time(base, max, 1), base);
        assert_eq!(ejection_time(base, max, 3), Duration::from_secs(90));
        assert_eq!(ejection_time(base, max, 4), max);
        assert_eq!(max_ejected(2, 10), 1);
        assert_eq!(max_ejected(20, 10), 2);
        assert_eq!(max_ejected(3, 100), 3);
    }

    #[test]
    fn panic_below_the_threshold() {
        assert!(!panic_mode(1, 2, 50));
        assert!(panic_mode(0, 2, 50));
        assert!(panic_mode(1, 3, 50));
        assert!(!panic_mode(0, 0, 50));
        assert!(!panic_mode(0, 2, 0));
    }

    #[test]
    fn thresholds_flip_health_after_consecutive_results() {
        let mut run = CheckRun::new(true);
        assert_eq!(run.record(false, 2, 3), None);
        assert_eq!(run.record(false, 2, 3), None);
        assert_eq!(
            run.record(true, 2, 3),
            None,
            "a pass resets the failure count"
        );
        assert_eq!(run.record(false, 2, 3), None);
        assert_eq!(run.record(false, 2, 3), None);
        assert_eq!(run.record(false, 2, 3), Some(false));
        assert_eq!(run.record(false, 2, 3), None);
        assert_eq!(run.record(true, 2, 3), None);
        assert_eq!(run.record(true, 2, 3), Some(true));
    }
}
