//! The proxy-wasm glue (wasm32 only).

use std::cell::Cell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, Status};
use rustygate_filter_kit::net;

use crate::limits::{Admission, Backend, Key, Limit, Limits, from_config, headers, step};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { limits: Rc::new(Limits::default()), keys: Rc::from([]), host: Rc::new(Cell::new(true)) })
    });
}}

struct Root {
    limits: Rc<Limits>,
    /// Per limit, the start of its counters' keys: this plugin's name (which keeps them apart
    /// from other plugins' in the shared stores), then the limit's name and rate.
    keys: Rc<[String]>,
    /// Whether the host's limiter answered (false after a NOT_FOUND: running elsewhere).
    host: Rc<Cell<bool>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match from_config(&raw) {
            Ok(l) => {
                self.host.set(l.backend == Backend::Auto);
                let plugin = self
                    .get_property(vec!["plugin_name"])
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                self.keys = l
                    .limits
                    .iter()
                    .map(|l| {
                        format!(
                            "rate-limit/{plugin}/{}/{}/{}/",
                            l.name, l.requests, l.window_ms
                        )
                    })
                    .collect();
                self.limits = Rc::new(l);
                true
            }
            Err(e) => {
                log::error!("rate-limit: invalid configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            limits: self.limits.clone(),
            keys: self.keys.clone(),
            host: self.host.clone(),
            response_headers: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    limits: Rc<Limits>,
    keys: Rc<[String]>,
    host: Rc<Cell<bool>>,
    response_headers: Vec<(&'static str, String)>,
}

impl Stream {
    fn key_value(&self, key: &Key) -> Option<String> {
        match key {
            Key::ClientIp => {
                let peer = self
                    .get_property(vec!["source", "address"])
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let xff = self.get_http_request_header("x-forwarded-for");
                let ip = net::client_ip(
                    net::strip_port(&peer),
                    xff.as_deref(),
                    self.limits.trusted_hops,
                );
                Some(ip.to_owned())
            }
            Key::Route => self
                .get_property(vec!["route_name"])
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            Key::Header(h) => self.get_http_request_header(h),
        }
    }

    /// Counts the request against limit `i` for key value `value`.
    fn admit(&self, i: usize, limit: &Limit, value: &str) -> Admission {
        let prefix = &self.keys[i];
        if self.host.get() {
            let mut args = Vec::with_capacity(12 + prefix.len() + value.len());
            args.extend_from_slice(&limit.requests.to_le_bytes());
            args.extend_from_slice(&limit.window_ms.to_le_bytes());
            args.extend_from_slice(prefix.as_bytes());
            args.extend_from_slice(value.as_bytes());
            match hostcalls::call_foreign_function("rustygate_rate_limit", Some(&args)) {
                Ok(Some(r)) if r.len() == 13 => {
                    return Admission {
                        allowed: r[0] == 1,
                        remaining: u32::from_le_bytes(r[1..5].try_into().expect("4 bytes")),
                        reset_ms: u64::from_le_bytes(r[5..13].try_into().expect("8 bytes")),
                    };
                }
                Err(Status::NotFound) => self.host.set(false),
                other => {
                    log::warn!("rate-limit: host limiter answered {other:?}; using shared data")
                }
            }
        }
        let key = [prefix.as_str(), value].concat();
        let now_ms = self
            .get_current_time()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        loop {
            let (stored, cas) = self.get_shared_data(&key);
            let (value, admission) = step(stored.as_deref(), limit, now_ms);
            let Some(value) = value else {
                return admission;
            };
            match self.set_shared_data(&key, Some(&value), cas) {
                Ok(()) => return admission,
                Err(Status::CasMismatch) => continue,
                Err(e) => {
                    // Failing open on a broken store beats refusing all traffic.
                    log::error!("rate-limit: shared data refused the update: {e:?}");
                    return admission;
                }
            }
        }
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let limits = self.limits.clone();
        let mut checked = Vec::with_capacity(limits.limits.len());
        for (i, limit) in limits.limits.iter().enumerate() {
            let Some(value) = self.key_value(&limit.key) else {
                continue; // a header key the request does not have: this limit does not apply
            };
            // Every limit that applies counts the request, allowed or not: attempts are what
            // a limit is about.
            let a = self.admit(i, limit, &value);
            checked.push((limit, a));
        }
        let out = headers(&checked);
        if checked.iter().any(|(_, a)| !a.allowed) {
            let body = br#"{"status":429,"error":"rate_limited","message":"too many requests"}"#;
            let mut pairs: Vec<(&str, &str)> = out.iter().map(|(k, v)| (*k, v.as_str())).collect();
            pairs.push(("content-type", "application/json"));
            self.send_http_response(429, pairs, Some(body));
            return Action::Pause;
        }
        self.response_headers = out;
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        for (name, value) in std::mem::take(&mut self.response_headers) {
            self.set_http_response_header(name, Some(&value));
        }
        Action::Continue
    }
}
