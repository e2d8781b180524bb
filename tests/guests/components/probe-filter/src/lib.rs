//! probe-filter: a component filter that uses every part of the `http-filter` world, chosen by
//! the request path, so the tests can check each through the gateway:
//!
//! - every request: `x-probe-route`, `x-probe-id`, `x-probe-client` request headers; every
//!   response: `x-probe-tag` (from the configuration), `x-probe-status`, `x-probe-path` (the
//!   request, read in the response phase) and `x-probe-read-only` (a request edit there is
//!   refused);
//! - `/kv`: counts in the shared store (`x-kv-hits`); `/limited`: 3 per minute from the host
//!   limiter, then 429; `/rewrite`: the path becomes `/rewritten`; `/respond`: a local 418;
//!   `/upper`: the request body, buffered whole, upper-cased; `/bang`: `!` appended to the
//!   response body; `/invalid`: tries an invalid header name;
//! - `/call/allow`, `/call/deny`: asks the `auth` cluster (same path), then lets the request go
//!   on with `x-auth-body-bytes` or answers 403; `/call/twice` asks twice in a row;
//!   `/call/nowhere` asks a cluster that does not exist and answers 502 with the reason;
//! - `/trap` panics, `/spin` never returns, `/grow` allocates without end.

use std::rc::Rc;

use rustygate_sdk::filter::{
    Action, Body, BodyAction, CallRequest, CallResponse, EditError, HttpFilter, LocalResponse,
    Phases, Request, Response,
};
use rustygate_sdk::filter::{kv, rate_limit};

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    tag: String,
    refuse: bool,
}

pub struct Probe {
    config: Rc<Config>,
    path: String,
}

impl HttpFilter for Probe {
    type Config = Config;

    fn configure(config: &str) -> Result<Config, String> {
        let config: Config = rustygate_sdk::config::parse(config)?;
        if config.refuse {
            return Err("refuse: true was asked for".into());
        }
        Ok(config)
    }

    fn phases(_: &Config) -> Phases {
        Phases::REQUEST_HEADERS
            | Phases::REQUEST_BODY
            | Phases::RESPONSE_HEADERS
            | Phases::RESPONSE_BODY
    }

    fn new(config: Rc<Config>) -> Self {
        Probe {
            config,
            path: String::new(),
        }
    }

    fn on_request_headers(&mut self, request: &Request, _end_of_stream: bool) -> Action {
        self.path = request.path();
        let _ = request.set_header("x-probe-route", &request.route());
        let _ = request.set_header("x-probe-id", &request.id());
        let _ = request.set_header("x-probe-client", &request.client_address());
        match self.path.as_str() {
            "/kv" => {
                let hits = kv::increment("hits", 1);
                let _ = request.set_header("x-kv-hits", &hits.to_string());
            }
            "/limited" => {
                let d = rate_limit::check("limited", 3, 60_000);
                if !d.allowed {
                    return Action::Respond(
                        LocalResponse::new(429)
                            .header("retry-after", (d.reset_ms / 1000 + 1).to_string())
                            .body("slow down\n"),
                    );
                }
                let _ = request.set_header("x-remaining", &d.remaining.to_string());
            }
            "/rewrite" => {
                let _ = request.set_path("/rewritten");
            }
            "/respond" => {
                return Action::Respond(
                    LocalResponse::new(418)
                        .header("x-probe-local", "yes")
                        .json(r#"{"error":"teapot"}"#),
                );
            }
            "/invalid" => {
                let refused = matches!(
                    request.set_header("bad name", "x"),
                    Err(EditError::InvalidName)
                ) && matches!(
                    request.set_header("x-ok", "bad\nvalue"),
                    Err(EditError::InvalidValue)
                );
                let _ = request.set_header(
                    "x-probe-invalid",
                    if refused { "refused" } else { "accepted" },
                );
            }
            "/call/allow" | "/call/deny" | "/call/twice" => {
                let asked = if self.path == "/call/deny" {
                    "/call/deny"
                } else {
                    "/call/allow"
                };
                return Action::Call(
                    CallRequest::get("auth", asked)
                        .header("x-asked-by", "probe")
                        .timeout_ms(5_000),
                );
            }
            "/call/nowhere" => return Action::Call(CallRequest::get("nowhere", "/")),
            "/trap" => panic!("probe-filter: asked to trap"),
            "/spin" =>
            {
                #[allow(clippy::empty_loop)]
                loop {}
            }
            "/grow" => {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    hog.push(vec![1; 1 << 20]);
                }
            }
            _ => {}
        }
        Action::Continue
    }

    fn on_call_response(
        &mut self,
        request: &Request,
        response: Result<CallResponse, String>,
    ) -> Action {
        let answer = match response {
            Err(reason) => {
                return Action::Respond(
                    LocalResponse::new(502).body(format!("call failed: {reason}")),
                );
            }
            Ok(answer) => answer,
        };
        if answer.status != 200 {
            return Action::Respond(
                LocalResponse::new(403)
                    .header("x-auth-status", answer.status.to_string())
                    .body("denied by probe-filter\n"),
            );
        }
        let calls = request
            .header("x-auth-calls")
            .map_or(0, |n| n.parse().unwrap_or(0))
            + 1;
        let _ = request.set_header("x-auth-calls", &calls.to_string());
        let _ = request.set_header("x-auth-body-bytes", &answer.body.len().to_string());
        let _ = request.set_header("x-auth-type", answer.header("content-type").unwrap_or(""));
        if self.path == "/call/twice" && calls < 2 {
            return Action::Call(
                CallRequest::get("auth", "/call/allow").header("x-asked-by", "probe"),
            );
        }
        Action::Continue
    }

    fn on_request_body(
        &mut self,
        _request: &Request,
        body: &Body,
        end_of_stream: bool,
    ) -> BodyAction {
        if self.path != "/upper" {
            return BodyAction::Continue;
        }
        if !end_of_stream {
            return BodyAction::Buffer;
        }
        let all = body.read(0, body.len());
        body.replace(&all.to_ascii_uppercase());
        BodyAction::Continue
    }

    fn on_response_headers(
        &mut self,
        request: &Request,
        response: &Response,
        _eos: bool,
    ) -> Action {
        let _ = response.set_header("x-probe-tag", &self.config.tag);
        let _ = response.set_header("x-probe-status", &response.status().to_string());
        let _ = response.set_header("x-probe-path", &request.path());
        let refused = matches!(request.set_header("x-late", "1"), Err(EditError::ReadOnly));
        let _ = response.set_header("x-probe-read-only", if refused { "yes" } else { "no" });
        if self.path == "/bang" {
            let _ = response.remove_header("content-length");
        }
        Action::Continue
    }

    fn on_response_body(
        &mut self,
        _request: &Request,
        response: &Response,
        body: &Body,
        end_of_stream: bool,
    ) -> BodyAction {
        if self.path == "/bang" && end_of_stream {
            // The head went on towards the client before the body phase: still readable here.
            let kind = response.header("content-type").unwrap_or_default();
            body.append(format!("!{kind}").as_bytes());
        }
        BodyAction::Continue
    }
}

rustygate_sdk::export_http_filter!(Probe);
