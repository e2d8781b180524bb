//! Limits, windows and the headers they produce.

use rustygate_filter_kit::config::ConfigError;
use serde::Deserialize;

/// The filter's configuration.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The limits; a request must be within all of them.
    pub limits: Vec<LimitConfig>,
    /// How many proxies in front of the gateway append to `X-Forwarded-For` and are trusted;
    /// 0 (default) keys `client_ip` on the connection's peer address.
    pub trusted_hops: usize,
    /// `auto` (default): the host's limiter when there is one, shared data otherwise;
    /// `shared_data`: always shared data (what runs in Envoy).
    pub backend: Backend,
}

/// Where requests are counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    #[default]
    Auto,
    SharedData,
}

/// One limit.
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Name used in the `RateLimit` headers (default: the key, as in `client_ip`).
    #[serde(default)]
    pub name: Option<String>,
    /// `<requests> per <window>`, the window as `60s`, `500ms`, `5m`, `1h` or `second`,
    /// `minute`, `hour`.
    pub rate: String,
    /// What requests are counted by.
    #[serde(default)]
    pub key: KeyConfig,
}

/// What a limit counts by.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum KeyConfig {
    /// `client_ip` or `route`.
    Simple(SimpleKey),
    /// `{ header: x-user-id }`: requests without the header are not counted by this limit.
    Header { header: String },
}

impl Default for KeyConfig {
    fn default() -> Self {
        KeyConfig::Simple(SimpleKey::ClientIp)
    }
}

/// The keys without parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum SimpleKey {
    ClientIp,
    Route,
}

/// A validated limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub name: String,
    pub requests: u32,
    pub window_ms: u64,
    pub key: Key,
    /// This limit's part of `RateLimit-Policy` (`"name";q=100;w=60`), made once: formatting
    /// numbers per request costs a filter in WebAssembly more than counting does.
    pub policy: String,
}

impl Limit {
    pub fn new(name: String, requests: u32, window_ms: u64, key: Key) -> Self {
        let mut policy = format!("\"{name}\";q=");
        push_int(&mut policy, u64::from(requests));
        policy.push_str(";w=");
        push_int(&mut policy, secs(window_ms));
        Self {
            name,
            requests,
            window_ms,
            key,
            policy,
        }
    }
}

/// Appends `n` in decimal, without the formatting machinery.
pub fn push_int(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits: the check is a formality.
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

/// What a validated limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    ClientIp,
    Route,
    Header(String),
}

/// The validated configuration.
#[derive(Debug, Default)]
pub struct Limits {
    pub limits: Vec<Limit>,
    pub trusted_hops: usize,
    pub backend: Backend,
}

/// Parses `100 per 60s`.
pub fn parse_rate(rate: &str) -> Result<(u32, u64), String> {
    let bad = || format!("{rate:?} is not a rate: write it as `100 per 60s`");
    let (n, window) = rate.split_once(" per ").ok_or_else(bad)?;
    let requests: u32 = n.trim().parse().map_err(|_| bad())?;
    if requests == 0 {
        return Err("a limit of 0 requests would refuse everything; remove the filter from the route instead".into());
    }
    let w = window.trim();
    let ms = match w {
        "second" => 1_000,
        "minute" => 60_000,
        "hour" => 3_600_000,
        _ => rustygate_filter_kit::duration::parse_ms(w)
            .ok()
            .filter(|ms| *ms > 0)
            .ok_or_else(bad)?,
    };
    Ok((requests, ms))
}

/// Parses and validates a configuration.
pub fn from_config(raw: &[u8]) -> Result<Limits, ConfigError> {
    let c: Config = rustygate_filter_kit::config::parse(raw)?;
    if c.limits.is_empty() {
        return Err(ConfigError::new("limits", "at least one limit is needed"));
    }
    let mut limits = Vec::new();
    for (i, l) in c.limits.iter().enumerate() {
        let (requests, window_ms) =
            parse_rate(&l.rate).map_err(|e| ConfigError::new(format!("limits[{i}].rate"), e))?;
        let key = match &l.key {
            KeyConfig::Simple(SimpleKey::ClientIp) => Key::ClientIp,
            KeyConfig::Simple(SimpleKey::Route) => Key::Route,
            KeyConfig::Header { header } => {
                if header.is_empty() {
                    return Err(ConfigError::new(
                        format!("limits[{i}].key.header"),
                        "empty header name",
                    ));
                }
                Key::Header(header.to_ascii_lowercase())
            }
        };
        let name = l.name.clone().unwrap_or_else(|| match &key {
            Key::ClientIp => "client_ip".into(),
            Key::Route => "route".into(),
            Key::Header(h) => h.clone(),
        });
        if name.contains(['"', '\\']) {
            return Err(ConfigError::new(
                format!("limits[{i}].name"),
                "quotes and backslashes are not allowed",
            ));
        }
        limits.push(Limit::new(name, requests, window_ms, key));
    }
    Ok(Limits {
        limits,
        trusted_hops: c.trusted_hops,
        backend: c.backend,
    })
}

/// One limit's verdict for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub allowed: bool,
    pub remaining: u32,
    pub reset_ms: u64,
}

/// The shared-data form of a window: `u64 start_ms`, `u32 count`. Given what is stored (if
/// anything) and the time, returns the value to store (`None`: nothing to write) and the
/// verdict. The caller writes with compare-and-swap and retries on a mismatch, which is what
/// makes the count exact across workers.
pub fn step(stored: Option<&[u8]>, limit: &Limit, now_ms: u64) -> (Option<[u8; 12]>, Admission) {
    let (mut start, mut count) = match stored {
        Some(b) if b.len() == 12 => (
            u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            u32::from_le_bytes(b[8..].try_into().expect("4 bytes")),
        ),
        _ => (now_ms, 0),
    };
    if now_ms.saturating_sub(start) >= limit.window_ms || now_ms < start {
        start = now_ms;
        count = 0;
    }
    let reset_ms = limit.window_ms - now_ms.saturating_sub(start).min(limit.window_ms);
    if count >= limit.requests {
        return (
            None,
            Admission {
                allowed: false,
                remaining: 0,
                reset_ms,
            },
        );
    }
    count += 1;
    let mut value = [0u8; 12];
    value[..8].copy_from_slice(&start.to_le_bytes());
    value[8..].copy_from_slice(&count.to_le_bytes());
    (
        Some(value),
        Admission {
            allowed: true,
            remaining: limit.requests - count,
            reset_ms,
        },
    )
}

fn secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// The headers for a request that was counted against `checked` (limit, verdict) pairs: the
/// IETF `RateLimit-Policy` for every limit and `RateLimit` for the one closest to running out,
/// plus `Retry-After` when denied.
pub fn headers(checked: &[(&Limit, Admission)]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if checked.is_empty() {
        return out;
    }
    let mut policy = String::new();
    for (i, (l, _)) in checked.iter().enumerate() {
        if i > 0 {
            policy.push_str(", ");
        }
        policy.push_str(&l.policy);
    }
    out.push(("ratelimit-policy", policy));
    let (tightest, a) = checked
        .iter()
        .min_by_key(|(_, a)| (a.allowed, a.remaining))
        .expect("not empty");
    let mut value = String::with_capacity(tightest.name.len() + 24);
    value.push('"');
    value.push_str(&tightest.name);
    value.push_str("\";r=");
    push_int(&mut value, u64::from(a.remaining));
    value.push_str(";t=");
    push_int(&mut value, secs(a.reset_ms));
    out.push(("ratelimit", value));
    if !a.allowed {
        let mut retry = String::new();
        push_int(&mut retry, secs(a.reset_ms).max(1));
        out.push(("retry-after", retry));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("100 per 60s"), Ok((100, 60_000)));
        assert_eq!(parse_rate("5 per second"), Ok((5, 1_000)));
        assert_eq!(parse_rate("10 per 500ms"), Ok((10, 500)));
        assert_eq!(parse_rate("1 per 2h"), Ok((1, 7_200_000)));
        for bad in [
            "100",
            "x per 1s",
            "1 per 0s",
            "1 per 5 parsecs",
            "0 per 1s",
            "1 per s",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    fn limit(requests: u32, window_ms: u64) -> Limit {
        Limit::new("t".into(), requests, window_ms, Key::ClientIp)
    }

    #[test]
    fn integers_print_in_decimal() {
        for n in [0, 7, 10, 99, 1000, 4_294_967_295, u64::MAX] {
            let mut s = String::from("x");
            push_int(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }

    #[test]
    fn window_admits_exactly_the_limit_then_resets() {
        let l = limit(2, 1000);
        let (v1, a1) = step(None, &l, 10_000);
        assert!(a1.allowed && a1.remaining == 1 && a1.reset_ms == 1000);
        let (v2, a2) = step(v1.as_ref().map(|v| &v[..]), &l, 10_400);
        assert!(a2.allowed && a2.remaining == 0 && a2.reset_ms == 600);
        let (v3, a3) = step(v2.as_ref().map(|v| &v[..]), &l, 10_999);
        assert!(!a3.allowed && v3.is_none() && a3.reset_ms == 1);
        let (_, a4) = step(v2.as_ref().map(|v| &v[..]), &l, 11_000);
        assert!(a4.allowed && a4.remaining == 1, "next window");
        // A clock that went backwards starts a new window rather than underflowing.
        let (_, a5) = step(v2.as_ref().map(|v| &v[..]), &l, 9_000);
        assert!(a5.allowed);
    }

    #[test]
    fn headers_report_the_tightest_limit() {
        let a = limit(100, 60_000);
        let b = Limit::new("burst".into(), 10, 1_000, Key::ClientIp);
        let h = headers(&[
            (
                &a,
                Admission {
                    allowed: true,
                    remaining: 42,
                    reset_ms: 30_500,
                },
            ),
            (
                &b,
                Admission {
                    allowed: true,
                    remaining: 3,
                    reset_ms: 200,
                },
            ),
        ]);
        assert_eq!(
            h[0],
            (
                "ratelimit-policy",
                "\"t\";q=100;w=60, \"burst\";q=10;w=1".into()
            )
        );
        assert_eq!(h[1], ("ratelimit", "\"burst\";r=3;t=1".into()));
        assert_eq!(h.len(), 2);
        let h = headers(&[(
            &a,
            Admission {
                allowed: false,
                remaining: 0,
                reset_ms: 12_001,
            },
        )]);
        assert_eq!(h[2], ("retry-after", "13".into()));
    }

    #[test]
    fn configuration_is_validated() {
        let l = from_config(
            br#"{"limits":[{"rate":"100 per 60s"},{"name":"user","rate":"5 per second","key":{"header":"X-User-Id"}},{"rate":"1000 per minute","key":"route"}],"trusted_hops":1}"#,
        )
        .unwrap();
        assert_eq!(l.limits[0].key, Key::ClientIp);
        assert_eq!(l.limits[0].name, "client_ip");
        assert_eq!(l.limits[1].key, Key::Header("x-user-id".into()));
        assert_eq!(l.limits[2].key, Key::Route);
        assert_eq!(l.trusted_hops, 1);
        for (json, field) in [
            (r#"{"limits":[]}"#, "limits"),
            (r#"{"limits":[{"rate":"lots"}]}"#, "limits[0].rate"),
            (
                r#"{"limits":[{"rate":"1 per 1s","key":{"header":""}}]}"#,
                "limits[0].key.header",
            ),
        ] {
            assert_eq!(
                from_config(json.as_bytes()).unwrap_err().field,
                field,
                "{json}"
            );
        }
    }
}

#[cfg(test)]
#[test]
fn committed_schema_is_current() {
    rustygate_filter_kit::schema::check_committed::<Config>(
        env!("CARGO_MANIFEST_DIR"),
        "rate-limit filter configuration",
    );
}
