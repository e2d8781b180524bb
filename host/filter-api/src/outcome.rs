//! How a request ended, in Envoy's terms, because that is what filters and log pipelines built
//! for Envoy read: response flags (`response.flags`, `%RESPONSE_FLAGS%`) and response code
//! details (`response.code_details`, `%RESPONSE_CODE_DETAILS%`).

use std::borrow::Cow;
use std::cell::{Cell, Ref, RefCell};

/// Envoy's response flag bits, with the short names its access log prints. The values are
/// Envoy's `ResponseFlag` (legacy) bits, which is what its `response.flags` attribute holds;
/// the order is its printing order.
pub mod flags {
    /// `LH`: the local health check failed.
    pub const FAILED_LOCAL_HEALTH_CHECK: u64 = 0x1;
    /// `UH`: no endpoint of the cluster is healthy.
    pub const NO_HEALTHY_UPSTREAM: u64 = 0x2;
    /// `UT`: the upstream did not answer in time.
    pub const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
    /// `LR`: the proxy reset the stream.
    pub const LOCAL_RESET: u64 = 0x8;
    /// `UR`: the upstream reset the stream.
    pub const UPSTREAM_REMOTE_RESET: u64 = 0x10;
    /// `UF`: the upstream could not be connected to.
    pub const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
    /// `UC`: the upstream connection closed before the response.
    pub const UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;
    /// `UO`: the cluster's circuit breaker was open.
    pub const UPSTREAM_OVERFLOW: u64 = 0x80;
    /// `NR`: no route matched.
    pub const NO_ROUTE_FOUND: u64 = 0x100;
    /// `DC`: the client's connection ended before the response did.
    pub const DOWNSTREAM_CONNECTION_TERMINATION: u64 = 0x4000;
    /// `URX`: the upstream failed on every attempt the retry policy allowed.
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: u64 = 0x8000;
    /// `SI`: the stream was idle for the stream idle timeout.
    pub const STREAM_IDLE_TIMEOUT: u64 = 0x10000;
    /// `DPE`: the client's request was not valid HTTP.
    pub const DOWNSTREAM_PROTOCOL_ERROR: u64 = 0x40000;
    /// `UPE`: the upstream's response was not valid HTTP.
    pub const UPSTREAM_PROTOCOL_ERROR: u64 = 0x80_0000;
    /// `OM`: the proxy shed the request under load.
    pub const OVERLOAD_MANAGER: u64 = 0x200_0000;
    /// `DR`: the client reset its HTTP/2 stream before the response ended.
    pub const DOWNSTREAM_REMOTE_RESET: u64 = 0x1000_0000;

    /// Every flag Envoy defines, with its short name, in Envoy's order (bits this gateway never
    /// sets are here so that a set a filter reads back prints as Envoy would).
    pub(crate) const NAMES: [(u64, &str); 30] = [
        (FAILED_LOCAL_HEALTH_CHECK, "LH"),
        (NO_HEALTHY_UPSTREAM, "UH"),
        (UPSTREAM_REQUEST_TIMEOUT, "UT"),
        (LOCAL_RESET, "LR"),
        (UPSTREAM_REMOTE_RESET, "UR"),
        (UPSTREAM_CONNECTION_FAILURE, "UF"),
        (UPSTREAM_CONNECTION_TERMINATION, "UC"),
        (UPSTREAM_OVERFLOW, "UO"),
        (NO_ROUTE_FOUND, "NR"),
        (0x200, "DI"),
        (0x400, "FI"),
        (0x800, "RL"),
        (0x1000, "UAEX"),
        (0x2000, "RLSE"),
        (DOWNSTREAM_CONNECTION_TERMINATION, "DC"),
        (UPSTREAM_RETRY_LIMIT_EXCEEDED, "URX"),
        (STREAM_IDLE_TIMEOUT, "SI"),
        (0x2_0000, "IH"),
        (DOWNSTREAM_PROTOCOL_ERROR, "DPE"),
        (0x8_0000, "UMSDR"),
        (0x10_0000, "RFCF"),
        (0x20_0000, "NFCF"),
        (0x40_0000, "DT"),
        (UPSTREAM_PROTOCOL_ERROR, "UPE"),
        (0x100_0000, "NC"),
        (OVERLOAD_MANAGER, "OM"),
        (0x400_0000, "DF"),
        (0x800_0000, "DO"),
        (DOWNSTREAM_REMOTE_RESET, "DR"),
        (0x2000_0000, "UDO"),
    ];
}

/// The flags as Envoy's access log prints them: short names joined by `,`, or `-` for none.
pub fn flag_names(bits: u64) -> Cow<'static, str> {
    let mut names = flags::NAMES.iter().filter(|(bit, _)| bits & bit != 0);
    match (names.next(), names.next()) {
        (None, _) => Cow::Borrowed("-"),
        (Some((_, one)), None) => Cow::Borrowed(one),
        (Some((_, first)), Some((_, second))) => {
            let mut s = format!("{first},{second}");
            for (_, name) in names {
                s.push(',');
                s.push_str(name);
            }
            Cow::Owned(s)
        }
    }
}

/// A request's flags and details as they accumulate: flags add up (a failed retry leaves
/// `UF` and `URX`), details are the last word (an upstream's answer that a filter replaced
/// is the filter's reply).
#[derive(Debug, Default)]
pub struct Outcome {
    flags: Cell<u64>,
    details: RefCell<Cow<'static, str>>,
}

impl Outcome {
    /// Adds `bits` (see [`flags`]).
    pub fn flag(&self, bits: u64) {
        self.flags.set(self.flags.get() | bits);
    }

    /// Sets the details. As in Envoy, whitespace becomes `_`, so that a log field never
    /// splits.
    pub fn set_details(&self, details: impl Into<Cow<'static, str>>) {
        let mut details = details.into();
        if details.contains(char::is_whitespace) {
            details = Cow::Owned(details.replace(char::is_whitespace, "_"));
        }
        *self.details.borrow_mut() = details;
    }

    /// The flags so far.
    pub fn flags(&self) -> u64 {
        self.flags.get()
    }

    /// The details so far; empty until something decided the response.
    pub fn details(&self) -> Ref<'_, str> {
        Ref::map(self.details.borrow(), |d| &**d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_print_in_envoys_order() {
        assert_eq!(flag_names(0), "-");
        assert_eq!(flag_names(flags::UPSTREAM_CONNECTION_FAILURE), "UF");
        assert_eq!(
            flag_names(flags::UPSTREAM_RETRY_LIMIT_EXCEEDED | flags::UPSTREAM_CONNECTION_FAILURE),
            "UF,URX"
        );
        assert_eq!(
            flag_names(
                flags::OVERLOAD_MANAGER
                    | flags::NO_HEALTHY_UPSTREAM
                    | flags::DOWNSTREAM_CONNECTION_TERMINATION
            ),
            "UH,DC,OM"
        );
        assert_eq!(
            flag_names(flags::DOWNSTREAM_REMOTE_RESET | 0x2000_0000),
            "DR,UDO"
        );
    }

    #[test]
    fn details_never_hold_whitespace_and_the_last_one_wins() {
        let o = Outcome::default();
        assert_eq!(&*o.details(), "");
        o.set_details("via_upstream");
        o.set_details("denied by policy\tv2");
        assert_eq!(&*o.details(), "denied_by_policy_v2");
        o.flag(flags::UPSTREAM_CONNECTION_FAILURE);
        o.flag(flags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
        assert_eq!(o.flags(), 0x8020);
    }
}
