//! The proxy-wasm glue (wasm32 only). The root context owns the keys and the JWKS fetches;
//! a request whose token names a key that is not known yet waits (paused) for the fetch, and
//! the root finishes it when the answer arrives.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

use crate::config::{Auth, extract_token, from_config};
use crate::keys::{Key, parse_jwks};
use crate::token::{Refusal, Verified, claim_value};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { state: None }) });
}}

#[derive(Default)]
struct Jwks {
    fetched_ms: Option<u64>,
    last_attempt_ms: Option<u64>,
    in_flight: Option<u32>,
    /// Streams waiting for a fetch: (context id, token).
    waiting: Vec<(u32, String)>,
}

struct State {
    auth: Auth,
    /// The inline keys, then the JWKS keys.
    keys: Rc<Vec<Key>>,
    /// Tokens verified with these keys.
    verified: Verified,
    jwks: Jwks,
}

type Shared = Rc<RefCell<State>>;

fn now_ms(ctx: &dyn Context) -> u64 {
    ctx.get_current_time()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Lets the request go on: claims become headers, `Authorization` goes if configured.
/// Runs with the stream as the effective context.
fn admit(auth: &Auth, claims: &serde_json::Map<String, serde_json::Value>) {
    // Headers that carry claims are the gateway's to set, never the client's: each is
    // replaced by the claim, or removed when the token has no such claim. (A refused request
    // is answered here and never forwarded, so it needs neither.)
    for (claim, header) in &auth.forward {
        let value = claims.get(claim).map(claim_value);
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, header, value.as_deref());
    }
    if auth.strip_authorization {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "authorization", None);
    }
}

/// Answers 401 (RFC 6750). Runs with the stream as the effective context.
fn refuse(why: &str) {
    let challenge = format!(
        "Bearer realm=\"rustygate\", error=\"invalid_token\", error_description=\"{}\"",
        why.replace('"', "'")
    );
    let body =
        serde_json::json!({"status": 401, "error": "invalid_token", "message": why}).to_string();
    let _ = hostcalls::send_http_response(
        401,
        vec![
            ("www-authenticate", challenge.as_str()),
            ("content-type", "application/json"),
        ],
        Some(body.as_bytes()),
    );
}

struct Root {
    state: Option<Shared>,
}

/// Starts a JWKS fetch unless one is running. A fetch whose answer never came (the request
/// that started it went away, and its answer with it) stops counting after its timeout.
fn fetch(ctx: &dyn Context, state: &mut State, now: u64) {
    let Some(jwks) = &state.auth.jwks else { return };
    let stale = state
        .jwks
        .last_attempt_ms
        .is_some_and(|t| now.saturating_sub(t) > jwks.timeout_ms + 1_000);
    if state.jwks.in_flight.is_some() && !stale {
        return;
    }
    {
        state.jwks.last_attempt_ms = Some(now);
        let headers = vec![
            (":method", "GET"),
            (":path", jwks.path.as_str()),
            (":authority", jwks.authority.as_str()),
            ("accept", "application/json"),
        ];
        match ctx.dispatch_http_call(
            &jwks.cluster,
            headers,
            None,
            vec![],
            Duration::from_millis(jwks.timeout_ms),
        ) {
            Ok(token) => state.jwks.in_flight = Some(token),
            Err(e) => {
                state.jwks.in_flight = None;
                log::error!(
                    "jwt-auth: cannot fetch the JWKS from cluster {}: {e:?}",
                    jwks.cluster
                );
            }
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if let Some(shared) = self.state.clone() {
            jwks_answered(self, &shared, token, body_size);
        }
    }
}

/// A JWKS fetch answered (to the root, or to the request that started it: the SDK delivers a
/// call's answer to the context that made it). Loads the keys, then finishes every request
/// that was waiting for them.
fn jwks_answered(ctx: &dyn Context, shared: &Shared, token: u32, body_size: usize) {
    let mut state = shared.borrow_mut();
    if state.jwks.in_flight != Some(token) {
        return;
    }
    state.jwks.in_flight = None;
    let status = ctx
        .get_http_call_response_header(":status")
        .unwrap_or_default();
    let body = ctx
        .get_http_call_response_body(0, body_size)
        .unwrap_or_default();
    match (status.as_str(), parse_jwks(&body)) {
        ("200", Ok((fetched, skipped))) => {
            for s in &skipped {
                log::info!("jwt-auth: JWKS key skipped: {s}");
            }
            let mut keys = state.auth.keys.clone();
            keys.extend(fetched);
            log::info!(
                "jwt-auth: JWKS loaded, {} keys",
                keys.len() - state.auth.keys.len()
            );
            state.keys = Rc::new(keys);
            state.jwks.fetched_ms = Some(now_ms(ctx));
        }
        ("200", Err(e)) => log::warn!("jwt-auth: JWKS refused: {e}"),
        (status, _) => log::warn!(
            "jwt-auth: JWKS fetch answered {:?}",
            if status.is_empty() {
                "no response"
            } else {
                status
            }
        ),
    }
    let waiting = std::mem::take(&mut state.jwks.waiting);
    let now = now_ms(ctx) / 1000;
    for (id, token) in waiting {
        if hostcalls::set_effective_context(id).is_err() {
            continue; // the request is gone
        }
        let State {
            keys,
            auth,
            verified,
            ..
        } = &mut *state;
        match verified.verify(&token, keys, &auth.rules, now) {
            Ok(claims) => {
                admit(auth, &claims);
                let _ = hostcalls::resume_http_request();
            }
            Err(r) => refuse(&r.description()),
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        let auth = match from_config(&raw) {
            Ok(a) => a,
            Err(e) => {
                log::error!("jwt-auth: invalid configuration: {e}");
                return false;
            }
        };
        let has_jwks = auth.jwks.is_some();
        let keys = Rc::new(auth.keys.clone());
        self.state = Some(Rc::new(RefCell::new(State {
            auth,
            keys,
            verified: Verified::default(),
            jwks: Jwks::default(),
        })));
        if has_jwks {
            // The first tick fetches the JWKS; later ticks keep it fresh.
            self.set_tick_period(Duration::from_secs(1));
        }
        true
    }

    fn on_tick(&mut self) {
        let Some(shared) = self.state.clone() else {
            return;
        };
        let mut state = shared.borrow_mut();
        let Some(refresh) = state.auth.jwks.as_ref().map(|j| j.refresh_ms) else {
            return;
        };
        let now = now_ms(self);
        let due = state
            .jwks
            .fetched_ms
            .is_none_or(|t| now.saturating_sub(t) >= refresh);
        if due {
            fetch(self, &mut state, now);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            id: context_id,
            state: self.state.clone()?,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    id: u32,
    state: Shared,
}

impl Context for Stream {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let shared = self.state.clone();
        jwks_answered(self, &shared, token, body_size);
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let shared = self.state.clone();
        let mut state = shared.borrow_mut();
        // Each lookup is a host call: the cookie and the path only when a source reads them.
        let from = &state.auth.from;
        let cookie = from
            .cookie
            .is_some()
            .then(|| self.get_http_request_header("cookie"))
            .flatten();
        let path = from
            .query
            .is_some()
            .then(|| self.get_http_request_header(":path"))
            .flatten();
        let token = extract_token(
            from,
            self.get_http_request_header("authorization").as_deref(),
            cookie.as_deref(),
            path.as_deref().unwrap_or_default(),
        );
        let Some(token) = token else {
            refuse("missing token");
            return Action::Pause;
        };
        let now = now_ms(self);
        let State {
            keys,
            auth,
            verified,
            ..
        } = &mut *state;
        match verified.verify(&token, keys, &auth.rules, now / 1000) {
            Ok(claims) => {
                admit(auth, &claims);
                Action::Continue
            }
            Err(Refusal::UnknownKey(kid)) if state.auth.jwks.is_some() => {
                // A key we have not seen: the JWKS may have rotated. Fetch again, but not more
                // often than min_refetch; wait for a fetch already under way.
                let min = state.auth.jwks.as_ref().map_or(0, |j| j.min_refetch_ms);
                let may_fetch = state
                    .jwks
                    .last_attempt_ms
                    .is_none_or(|t| now.saturating_sub(t) >= min);
                if !may_fetch && state.jwks.in_flight.is_none() {
                    refuse(&Refusal::UnknownKey(kid).description());
                    return Action::Pause;
                }
                state.jwks.waiting.push((self.id, token));
                fetch(self, &mut state, now);
                if state.jwks.in_flight.is_none() {
                    state.jwks.waiting.retain(|(id, _)| *id != self.id);
                    refuse("the key set is unavailable");
                }
                Action::Pause
            }
            Err(r) => {
                refuse(&r.description());
                Action::Pause
            }
        }
    }
}
