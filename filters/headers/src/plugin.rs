//! The proxy-wasm glue (wasm32 only).

use std::borrow::Cow;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use rustygate_filter_kit::template::{Template, Var};

use crate::config::{Op, Rules, rules};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { rules: Rc::new(Rules::default()) })
    });
}}

struct Root {
    rules: Rc<Rules>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match rules(&raw) {
            Ok(r) => {
                self.rules = Rc::new(r);
                true
            }
            Err(e) => {
                log::error!("headers: invalid configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            rules: self.rules.clone(),
            response_values: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    rules: Rc<Rules>,
    /// Response values that read the request, expanded while it was readable (Envoy does
    /// not guarantee request data in the response phase); empty for constant values.
    response_values: Vec<String>,
}

/// Response value `i`: the constant, or what the request phase expanded.
fn response_value<'a>(t: &'a Template, expanded: &'a [String], i: usize) -> &'a str {
    t.constant()
        .unwrap_or_else(|| expanded.get(i).map_or("", String::as_str))
}

/// A template's value: constants as they are, without a copy per request.
fn value<'t>(t: &'t Template, lookup: impl FnMut(&Var) -> Option<String>) -> Cow<'t, str> {
    match t.constant() {
        Some(c) => Cow::Borrowed(c),
        None => Cow::Owned(t.expand(lookup)),
    }
}

impl Stream {
    fn lookup(&self, var: &Var) -> Option<String> {
        match var {
            Var::RequestId => self.get_http_request_header("x-request-id"),
            Var::RequestPath => self.get_http_request_header(":path"),
            Var::RequestMethod => self.get_http_request_header(":method"),
            Var::RequestHost => self.get_http_request_header(":authority"),
            Var::RequestScheme => self.get_http_request_header(":scheme"),
            Var::RequestHeader(name) => self.get_http_request_header(name),
            Var::SourceAddress => self.property(&["source", "address"]),
            Var::SourceIp => self
                .property(&["source", "address"])
                .map(|a| rustygate_filter_kit::net::strip_port(&a).to_owned()),
            Var::RouteName => self.property(&["route_name"]),
        }
    }

    fn property(&self, path: &[&str]) -> Option<String> {
        self.get_property(path.to_vec())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let rules = self.rules.clone();
        if rules.response_reads_request {
            self.response_values = rules
                .response
                .iter()
                .map(|op| match op {
                    Op::Set(_, t) | Op::Add(_, t) if t.constant().is_none() => {
                        t.expand(|v| self.lookup(v))
                    }
                    _ => String::new(),
                })
                .collect();
        }
        for op in &rules.request {
            match op {
                Op::Remove(name) => self.set_http_request_header(name, None),
                Op::Set(name, t) => {
                    let value = value(t, |v| self.lookup(v));
                    self.set_http_request_header(name, Some(&value));
                }
                Op::Add(name, t) => {
                    let value = value(t, |v| self.lookup(v));
                    self.add_http_request_header(name, &value);
                }
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let rules = self.rules.clone();
        let values = std::mem::take(&mut self.response_values);
        for (i, op) in rules.response.iter().enumerate() {
            match op {
                Op::Remove(name) => self.set_http_response_header(name, None),
                Op::Set(name, t) => {
                    self.set_http_response_header(name, Some(response_value(t, &values, i)))
                }
                Op::Add(name, t) => {
                    self.add_http_response_header(name, response_value(t, &values, i))
                }
            }
        }
        Action::Continue
    }
}
