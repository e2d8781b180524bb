//! The proxy-wasm glue (wasm32 only).

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use crate::policy::{Decision, Headers, Policy};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { policy: None }) });
}}

struct Root {
    policy: Option<Rc<Policy>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match Policy::from_config(&raw) {
            Ok(p) => {
                self.policy = Some(Rc::new(p));
                true
            }
            Err(e) => {
                log::error!("cors: invalid configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            policy: self.policy.clone(),
            response_headers: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    policy: Option<Rc<Policy>>,
    response_headers: Headers,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let Some(policy) = self.policy.clone() else {
            return Action::Continue;
        };
        // Each lookup is a host call: a request without `Origin` (most traffic) is not a CORS
        // request, and only a preflight needs the access-control-request-* headers.
        let Some(origin) = self.get_http_request_header("origin") else {
            return Action::Continue;
        };
        let method = self.get_http_request_header(":method").unwrap_or_default();
        let (request_method, request_headers) = if method.eq_ignore_ascii_case("OPTIONS") {
            (
                self.get_http_request_header("access-control-request-method"),
                self.get_http_request_header("access-control-request-headers"),
            )
        } else {
            (None, None)
        };
        match policy.decide(
            &method,
            Some(&origin),
            request_method.as_deref(),
            request_headers.as_deref(),
        ) {
            Decision::NotCors => Action::Continue,
            Decision::Actual(headers) => {
                self.response_headers = headers;
                Action::Continue
            }
            Decision::PreflightAllowed(headers) => {
                let pairs: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                self.send_http_response(204, pairs, None);
                Action::Pause
            }
            Decision::PreflightDenied(why) => {
                log::info!("cors: preflight denied: {why}");
                self.send_http_response(403, vec![], Some(b"CORS preflight denied\n"));
                Action::Pause
            }
        }
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        for (name, value) in std::mem::take(&mut self.response_headers) {
            if name == "vary" {
                self.add_http_response_header(name, &value);
            } else {
                self.set_http_response_header(name, Some(&value));
            }
        }
        Action::Continue
    }
}
