//! `headers` as a component filter: the configuration, rules and templates of
//! `filters/headers`, on the typed `http-filter` world instead of proxy-wasm. Compare
//! `filters/headers/src/plugin.rs`: no context ids, no property paths, no header-map
//! serialisation — the request is a handle with methods.

use std::rc::Rc;

use headers::config::{Op, Rules, rules};
use rustygate_filter_kit::template::Var;
use rustygate_sdk::filter::{Action, HttpFilter, Request, Response};

/// One request's work: response values are expanded while the request passes, so they are
/// right however the response arrives (a local response from a later filter included).
pub struct Headers {
    rules: Rc<Rules>,
    response_values: Vec<String>,
}

fn lookup(request: &Request, var: &Var) -> Option<String> {
    match var {
        Var::RequestId => Some(request.id()),
        Var::RequestPath => Some(request.path()),
        Var::RequestMethod => Some(request.method()),
        Var::RequestHost => Some(request.authority()),
        Var::RequestScheme => Some(request.scheme()),
        Var::RequestHeader(name) => request.header(name),
        Var::SourceAddress => Some(request.client_address()),
        Var::SourceIp => {
            Some(rustygate_filter_kit::net::strip_port(&request.client_address()).to_owned())
        }
        Var::RouteName => Some(request.route()),
    }
}

impl HttpFilter for Headers {
    type Config = Rules;

    fn configure(config: &str) -> Result<Rules, String> {
        let raw = if config.trim() == "null" { "" } else { config };
        rules(raw.as_bytes()).map_err(|e| format!("invalid configuration: {e}"))
    }

    fn new(rules: Rc<Rules>) -> Self {
        Headers {
            rules,
            response_values: Vec::new(),
        }
    }

    fn on_request_headers(&mut self, request: &Request, _end_of_stream: bool) -> Action {
        self.response_values = self
            .rules
            .response
            .iter()
            .map(|op| match op {
                Op::Set(_, t) | Op::Add(_, t) => t.expand(|v| lookup(request, v)),
                Op::Remove(_) => String::new(),
            })
            .collect();
        // Names and templates were validated at configure, so edits cannot be refused.
        for op in &self.rules.request {
            let _ = match op {
                Op::Remove(name) => request.remove_header(name),
                Op::Set(name, t) => request.set_header(name, &t.expand(|v| lookup(request, v))),
                Op::Add(name, t) => request.add_header(name, &t.expand(|v| lookup(request, v))),
            };
        }
        Action::Continue
    }

    fn on_response_headers(
        &mut self,
        _request: &Request,
        response: &Response,
        _end_of_stream: bool,
    ) -> Action {
        for (op, value) in self.rules.response.iter().zip(&self.response_values) {
            let _ = match op {
                Op::Remove(name) => response.remove_header(name),
                Op::Set(name, _) => response.set_header(name, value),
                Op::Add(name, _) => response.add_header(name, value),
            };
        }
        Action::Continue
    }
}

rustygate_sdk::export_http_filter!(Headers);
