//! abi-probe: a test filter for RustyGate's proxy-wasm host. Every behaviour is opt-in through
//! the plugin configuration (JSON), so tests can configure one module differently per route.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

mod display;
mod raw;
use display::display;

#[derive(Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Name echoed in `x-probe` on responses, so tests can tell chained filters apart.
    name: String,
    request_add: BTreeMap<String, String>,
    request_remove: Vec<String>,
    response_add: BTreeMap<String, String>,
    response_remove: Vec<String>,
    /// Rewrite a `:path` that starts with `[0]` to start with `[1]` instead.
    rewrite_prefix: Option<(String, String)>,
    /// Answer requests to this path locally with 403 from the request-headers phase.
    deny_path: Option<String>,
    /// Give that 403 these response code details (the SDK's call passes none).
    deny_details: Option<String>,
    /// Replace upstream responses with this status by a local 502 (response phase).
    replace_status: Option<u16>,
    /// Copy properties into response headers: `x-prop-<name>` for each listed path (dot form).
    properties: Vec<String>,
    /// Read these properties in `on_log` and keep them, as `name=value;...`, in shared data
    /// under `logged-properties`, where the next request's response headers phase puts them
    /// into `x-logged` (what a logging filter sees once a request is over).
    log_properties: Vec<String>,
    /// Report how the host answers these property reads (raw status and length, not the
    /// value) in `x-prop-status-<name>`.
    property_status: Vec<String>,
    /// Count requests in this shared-data key (CAS loop, shared by every worker's VM) and
    /// return the count in `x-shared-count`.
    shared_counter: Option<String>,
    /// Count requests in a counter metric of this name (`proxy_define_metric`).
    metric: Option<String>,
    /// Ask this cluster (GET `auth_path`, forwarding `x-user`) before letting a request
    /// through: 200 lets it go on with `x-auth-user: <response body>`; anything else is a
    /// local 403 carrying the call's status in `x-auth-status`.
    auth_cluster: Option<String>,
    auth_path: String,
    /// Buffer the whole request body, then replace every `[0]` in it with `[1]`.
    request_body_replace: Option<(String, String)>,
    /// Buffer the whole request body and answer 403 from the body phase if it contains this.
    request_body_deny: Option<String>,
    /// Make the `auth_cluster` call from the end of the request body (sending the body)
    /// instead of from the request headers.
    auth_on_body: bool,
    /// Make the `auth_cluster` call from the end of the response body instead (sending the
    /// body), holding it: 200 appends the call's answer to it, anything else is a local 403.
    auth_on_response_body: bool,
    /// Report the request body phases in response headers: `x-request-body-calls` and
    /// `x-request-body-size` (the size the last call was given).
    report_request_body: bool,
    /// Buffer the whole response body, then replace every `[0]` in it with `[1]`.
    response_body_replace: Option<(String, String)>,
    /// Let each response chunk through as it comes, and append this at the end.
    response_body_suffix: Option<String>,
    /// Leave `content-length` alone when changing the response body (the SDK examples remove it).
    keep_content_length: bool,
    /// Trailers to add to the request when it has trailers.
    request_trailers_add: BTreeMap<String, String>,
    /// Trailers to add at the end of the response body.
    response_trailers_add: BTreeMap<String, String>,
    /// Tick every this many milliseconds; responses carry this VM's tick count in `x-ticks`.
    tick_ms: u64,
    /// Stop ticking after this many ticks (sets the period to 0).
    tick_stop_after: Option<u32>,
    /// Register this shared queue (the last worker to register consumes it), enqueue every
    /// request's path, and count consumed items in shared data `consumed`; responses carry
    /// that count in `x-queue-consumed`.
    queue: Option<String>,
    /// Reset the stream (`proxy_close_stream`) on this path from the request-headers phase.
    reset_request_path: Option<String>,
    /// Reset the stream on this path from the response-headers phase.
    reset_response_path: Option<String>,
    /// Reset the stream on this path from the second response body chunk, unless it is the last.
    reset_body_path: Option<String>,
    /// On this path, from the request-headers phase, close and resume the downstream and
    /// close the upstream connection (`proxy_close_stream` / `proxy_continue_stream` with
    /// stream types 2 and 3), then let the request go on. The SDK traps on any status but OK.
    connection_ops_path: Option<String>,
    /// On this path, call the foreign function named by `x-foreign-name` with the bytes the
    /// request's `x-foreign-arg` gives in hex, and answer 200 with its result as the body, or 502 with the status's
    /// name in `x-foreign-status`.
    foreign_path: Option<String>,
    /// Call this cluster over gRPC (service `test.Echo`) on paths under `/grpc/`:
    /// `/grpc/call/<Method>` makes a unary call with the request's `x-message` and lets the
    /// request go on with `x-grpc-reply: <reply>`, or answers 403 with `x-grpc-status` and
    /// `x-grpc-message`; `/grpc/stream` opens `Chat`, sends `one` and `two`, half-closes and
    /// lets the request go on with what came back (`x-grpc-stream-*`); `/grpc/cancel` opens
    /// `Hang`, cancels it when its initial metadata arrives and goes on, `/grpc/cancel-at-once`
    /// cancels it in the callback that opened it (a callback for a cancelled call traps).
    grpc_cluster: Option<String>,
    /// Report these request fields (pseudo-headers too) in `x-request-<name>` (without a
    /// leading colon) on the response, `-` where the request has none.
    request_fields: Vec<String>,
    /// Misbehave on these paths.
    trap_path: Option<String>,
    loop_path: Option<String>,
    oom_path: Option<String>,
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { config: Config::default(), metric_id: None, queue_id: None }) });
}}

struct Root {
    config: Config,
    metric_id: Option<u32>,
    queue_id: Option<u32>,
}

/// Ticks seen by this VM (one VM per worker, so per worker).
static TICKS: AtomicU32 = AtomicU32::new(0);

fn shared_u64(ctx: &dyn Context, key: &str) -> (u64, Option<u32>) {
    let (value, cas) = ctx.get_shared_data(key);
    (
        value.map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap_or([0; 8]))),
        cas,
    )
}

/// Adds `n` to a shared-data counter with a compare-and-swap loop; returns the new value.
fn shared_add(ctx: &dyn Context, key: &str, n: u64) -> u64 {
    loop {
        let (value, cas) = shared_u64(ctx, key);
        if ctx
            .set_shared_data(key, Some(&(value + n).to_le_bytes()), cas)
            .is_ok()
        {
            return value + n;
        }
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        if raw.is_empty() {
            return true;
        }
        match serde_json::from_slice::<Config>(&raw) {
            Ok(c) => {
                if let Some(name) = &c.metric {
                    self.metric_id = proxy_wasm::hostcalls::define_metric(
                        proxy_wasm::types::MetricType::Counter,
                        name,
                    )
                    .ok();
                }
                if c.tick_ms > 0 {
                    self.set_tick_period(std::time::Duration::from_millis(c.tick_ms));
                }
                if let Some(name) = &c.queue {
                    self.queue_id = Some(
                        proxy_wasm::hostcalls::register_shared_queue(name).expect("register queue"),
                    );
                }
                self.config = c;
                true
            }
            Err(e) => {
                log::error!("abi-probe: invalid configuration: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let n = TICKS.fetch_add(1, Ordering::Relaxed) + 1;
        if self.config.tick_stop_after == Some(n) {
            self.set_tick_period(std::time::Duration::ZERO);
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        let mut n = 0;
        while let Ok(Some(_item)) = proxy_wasm::hostcalls::dequeue_shared_queue(queue_id) {
            n += 1;
        }
        if n > 0 {
            shared_add(self, "consumed", n);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            id: context_id,
            grpc_seen: Default::default(),
            grpc_cancelled: None,
            grpc_cancel_on_metadata: None,
            config: self.config.clone(),
            path: String::new(),
            metric_id: self.metric_id,
            shared_count: None,
            request_body_calls: 0,
            request_body_size: 0,
            response_body_calls: 0,
            response_call_at: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    id: u32,
    /// What a gRPC stream delivered: initial `x-server`, messages, trailing `x-trailer`.
    grpc_seen: (String, Vec<String>, String),
    grpc_cancelled: Option<u32>,
    grpc_cancel_on_metadata: Option<u32>,
    config: Config,
    path: String,
    metric_id: Option<u32>,
    shared_count: Option<u64>,
    request_body_calls: u32,
    request_body_size: usize,
    response_body_calls: u32,
    /// The response body's size when its call went out (`auth_on_response_body`).
    response_call_at: Option<usize>,
}

impl Stream {
    fn call_auth(&mut self, cluster: &str, body: Option<&[u8]>) -> Action {
        let c = &self.config;
        let user = self.get_http_request_header("x-user").unwrap_or_default();
        let path = if c.auth_path.is_empty() {
            "/check".to_owned()
        } else {
            c.auth_path.clone()
        };
        let headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", "auth"),
            ("x-user", user.as_str()),
        ];
        if let Err(e) = self.dispatch_http_call(
            cluster,
            headers,
            body,
            vec![],
            std::time::Duration::from_secs(2),
        ) {
            self.send_http_response(
                500,
                vec![],
                Some(format!("http_call failed: {e:?}\n").as_bytes()),
            );
        }
        Action::Pause
    }
}

impl Stream {
    fn grpc(&mut self, cluster: &str) -> Action {
        let user = self.get_http_request_header("x-user").unwrap_or_default();
        let metadata = vec![("x-user", user.as_bytes())];
        let path = self.path.clone();
        if let Some(method) = path.strip_prefix("/grpc/call/") {
            let message = self
                .get_http_request_header("x-message")
                .unwrap_or_default();
            let timeout = self
                .get_http_request_header("x-grpc-timeout-ms")
                .and_then(|t| t.parse().ok())
                .unwrap_or(2000);
            return match self.dispatch_grpc_call(
                cluster,
                "test.Echo",
                method,
                metadata,
                Some(message.as_bytes()),
                std::time::Duration::from_millis(timeout),
            ) {
                Ok(_) => Action::Pause,
                Err(e) => {
                    let body = format!("grpc call refused: {e:?}\n");
                    self.send_http_response(500, vec![], Some(body.as_bytes()));
                    Action::Pause
                }
            };
        }
        let method = if path.starts_with("/grpc/cancel") {
            "Hang"
        } else {
            "Chat"
        };
        let token = match self.open_grpc_stream(cluster, "test.Echo", method, metadata) {
            Ok(t) => t,
            Err(e) => {
                let body = format!("grpc stream refused: {e:?}\n");
                self.send_http_response(500, vec![], Some(body.as_bytes()));
                return Action::Pause;
            }
        };
        if path == "/grpc/cancel-at-once" {
            self.send_grpc_stream_message(token, Some(b"never sent"), false);
            self.cancel_grpc_stream(token);
            self.grpc_cancelled = Some(token);
            self.set_http_request_header("x-grpc-cancelled", Some("at-once"));
            return Action::Continue;
        }
        if path == "/grpc/cancel" {
            self.send_grpc_stream_message(token, Some(b"never answered"), false);
            self.grpc_cancel_on_metadata = Some(token);
            return Action::Pause;
        }
        self.send_grpc_stream_message(token, Some(b"one"), false);
        self.send_grpc_stream_message(token, Some(b"two"), false);
        self.close_grpc_stream(token);
        Action::Pause
    }

    fn not_cancelled(&self, token: u32) {
        assert_ne!(
            self.grpc_cancelled,
            Some(token),
            "gRPC callback after cancel"
        );
    }
}

impl Context for Stream {
    fn on_grpc_call_response(&mut self, _token: u32, status: u32, size: usize) {
        if status == 0 {
            let reply = self
                .get_grpc_call_response_body(0, size)
                .unwrap_or_default();
            self.set_http_request_header("x-grpc-reply", Some(&String::from_utf8_lossy(&reply)));
            self.resume_http_request();
        } else {
            let (code, message) = self.get_grpc_status();
            let code = code.to_string();
            let message = message.unwrap_or_default();
            self.send_http_response(
                403,
                vec![
                    ("x-grpc-status", code.as_str()),
                    ("x-grpc-message", message.as_str()),
                ],
                Some(b"denied by grpc\n"),
            );
        }
    }

    fn on_grpc_stream_initial_metadata(&mut self, token: u32, _n: u32) {
        self.not_cancelled(token);
        if self.grpc_cancel_on_metadata == Some(token) {
            self.cancel_grpc_stream(token);
            self.grpc_cancelled = Some(token);
            self.set_http_request_header("x-grpc-cancelled", Some("after-metadata"));
            self.resume_http_request();
            return;
        }
        let server = self
            .get_grpc_stream_initial_metadata_value("x-server")
            .unwrap_or_default();
        self.grpc_seen.0 = String::from_utf8_lossy(&server).into_owned();
    }

    fn on_grpc_stream_message(&mut self, token: u32, size: usize) {
        self.not_cancelled(token);
        let m = self.get_grpc_stream_message(0, size).unwrap_or_default();
        self.grpc_seen
            .1
            .push(String::from_utf8_lossy(&m).into_owned());
    }

    fn on_grpc_stream_trailing_metadata(&mut self, token: u32, _n: u32) {
        self.not_cancelled(token);
        let t = self
            .get_grpc_stream_trailing_metadata_value("x-trailer")
            .unwrap_or_default();
        self.grpc_seen.2 = String::from_utf8_lossy(&t).into_owned();
    }

    fn on_grpc_stream_close(&mut self, token: u32, status: u32) {
        self.not_cancelled(token);
        let (initial, messages, trailer) = std::mem::take(&mut self.grpc_seen);
        self.set_http_request_header("x-grpc-stream-initial", Some(&initial));
        self.set_http_request_header("x-grpc-stream-messages", Some(&messages.join(",")));
        self.set_http_request_header("x-grpc-stream-trailer", Some(&trailer));
        self.set_http_request_header("x-grpc-stream-status", Some(&status.to_string()));
        self.resume_http_request();
    }

    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let status = self
            .get_http_call_response_header(":status")
            .unwrap_or_default();
        if let (Some(at), "200") = (self.response_call_at, status.as_str()) {
            let body = self
                .get_http_call_response_body(0, body_size)
                .unwrap_or_default();
            self.set_http_response_body(at, 0, &body);
            self.resume_http_response();
        } else if status == "200" {
            let body = self
                .get_http_call_response_body(0, body_size)
                .unwrap_or_default();
            self.add_http_request_header("x-auth-user", String::from_utf8_lossy(&body).trim());
            self.resume_http_request();
        } else {
            let status = if status.is_empty() {
                "failed".to_owned()
            } else {
                status
            };
            // What the call answered, for tests that compare it with Envoy's local replies.
            let length = self
                .get_http_call_response_header("content-length")
                .unwrap_or_default();
            let body = self
                .get_http_call_response_body(0, body_size)
                .unwrap_or_default();
            let body = String::from_utf8_lossy(&body);
            self.send_http_response(
                403,
                vec![
                    ("x-auth-status", status.as_str()),
                    ("x-auth-length", length.as_str()),
                    ("x-auth-body", body.trim()),
                ],
                Some(b"forbidden\n"),
            );
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        self.path = self.get_http_request_header(":path").unwrap_or_default();
        log::info!(
            "abi-probe[{}] #{} request {} {}",
            self.config.name,
            self.id,
            self.get_http_request_header(":method").unwrap_or_default(),
            self.path
        );
        let c = &self.config;
        if c.trap_path.as_deref() == Some(&self.path) {
            panic!("abi-probe: trap requested");
        }
        if c.loop_path.as_deref() == Some(&self.path) {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if c.oom_path.as_deref() == Some(&self.path) {
            let mut hog: Vec<Vec<u8>> = Vec::new();
            loop {
                hog.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hog);
            }
        }
        if c.reset_request_path.as_deref() == Some(&self.path) {
            self.reset_http_request();
            return Action::Continue;
        }
        if c.connection_ops_path.as_deref() == Some(&self.path) {
            let _ = proxy_wasm::hostcalls::close_downstream();
            let _ = proxy_wasm::hostcalls::close_upstream();
            let _ = proxy_wasm::hostcalls::resume_downstream();
            self.set_http_request_header("x-connection-ops", Some("done"));
        }
        if c.foreign_path.as_deref() == Some(&self.path) {
            let name = self
                .get_http_request_header("x-foreign-name")
                .unwrap_or_default();
            let hex = self
                .get_http_request_header("x-foreign-arg")
                .unwrap_or_default();
            let arg: Vec<u8> = (0..hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
                .collect();
            match proxy_wasm::hostcalls::call_foreign_function(&name, Some(&arg)) {
                Ok(result) => self.send_http_response(200, vec![], result.as_deref()),
                Err(status) => {
                    let status = format!("{status:?}");
                    self.send_http_response(502, vec![("x-foreign-status", &status)], None);
                }
            }
            return Action::Pause;
        }
        if let (Some(cluster), true) = (c.grpc_cluster.clone(), self.path.starts_with("/grpc/")) {
            return self.grpc(&cluster);
        }
        if let (Some(cluster), false) = (
            c.auth_cluster.clone(),
            c.auth_on_body || c.auth_on_response_body,
        ) {
            return self.call_auth(&cluster, None);
        }
        let c = &self.config;
        if let (Some(details), true) = (&c.deny_details, c.deny_path.as_deref() == Some(&self.path))
        {
            send_with_details(403, details, b"denied by abi-probe\n");
            return Action::Pause;
        }
        if c.deny_path.as_deref() == Some(&self.path) {
            self.send_http_response(
                403,
                vec![("x-denied-by", c.name.as_str())],
                Some(b"denied by abi-probe\n"),
            );
            return Action::Pause;
        }
        if let Some(id) = self.metric_id {
            let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
        }
        if let Some(key) = c.shared_counter.clone() {
            // Compare-and-swap until our increment lands: other workers race on the same key.
            self.shared_count = Some(shared_add(self, &key, 1));
        }
        if let Some(name) = &c.queue {
            let id = proxy_wasm::hostcalls::resolve_shared_queue("", name)
                .ok()
                .flatten()
                .expect("queue registered");
            proxy_wasm::hostcalls::enqueue_shared_queue(id, Some(self.path.as_bytes()))
                .expect("enqueue");
        }
        let c = &self.config;
        if let Some((from, to)) = &c.rewrite_prefix {
            if let Some(rest) = self.path.strip_prefix(from.as_str()) {
                self.set_http_request_header(":path", Some(&format!("{to}{rest}")));
            }
        }
        for name in &c.request_remove {
            self.set_http_request_header(name, None);
        }
        for (k, v) in &c.request_add {
            self.add_http_request_header(k, v);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let c = self.config.clone();
        if c.reset_response_path.as_deref() == Some(&self.path) {
            self.reset_http_response();
            return Action::Continue;
        }
        if let Some(status) = c.replace_status {
            if self.get_http_response_header(":status").as_deref()
                == Some(status.to_string().as_str())
            {
                self.send_http_response(
                    502,
                    vec![("x-replaced-by", c.name.as_str())],
                    Some(b"replaced by abi-probe\n"),
                );
                return Action::Pause;
            }
        }
        for name in &c.response_remove {
            self.set_http_response_header(name, None);
        }
        for (k, v) in &c.response_add {
            self.add_http_response_header(k, v);
        }
        for p in &c.properties {
            let path: Vec<&str> = p.split('.').collect();
            let value = display(p, self.get_property(path));
            self.add_http_response_header(&format!("x-prop-{}", p.replace('.', "-")), &value);
        }
        for name in &c.request_fields {
            let value = self.get_http_request_header(name);
            let header = format!("x-request-{}", name.trim_start_matches(':'));
            self.add_http_response_header(&header, value.as_deref().unwrap_or("-"));
        }
        for p in &c.property_status {
            let status = raw::property_status(p);
            self.add_http_response_header(
                &format!("x-prop-status-{}", p.replace('.', "-")),
                &status,
            );
        }
        if !c.log_properties.is_empty() {
            if let (Some(logged), _) = self.get_shared_data("logged-properties") {
                self.add_http_response_header("x-logged", &String::from_utf8_lossy(&logged));
            }
        }
        if !c.name.is_empty() {
            self.add_http_response_header("x-probe", &c.name);
        }
        if let Some(n) = self.shared_count {
            self.add_http_response_header("x-shared-count", &n.to_string());
        }
        if c.tick_ms > 0 {
            self.add_http_response_header("x-ticks", &TICKS.load(Ordering::Relaxed).to_string());
        }
        if c.queue.is_some() {
            self.add_http_response_header(
                "x-queue-consumed",
                &shared_u64(self, "consumed").0.to_string(),
            );
        }
        if c.report_request_body {
            self.add_http_response_header(
                "x-request-body-calls",
                &self.request_body_calls.to_string(),
            );
            self.add_http_response_header(
                "x-request-body-size",
                &self.request_body_size.to_string(),
            );
        }
        let rewrites = c.response_body_replace.is_some() || c.response_body_suffix.is_some();
        if rewrites && !c.keep_content_length {
            self.set_http_response_header("content-length", None);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.request_body_calls += 1;
        self.request_body_size = body_size;
        let c = self.config.clone();
        let whole =
            c.request_body_replace.is_some() || c.request_body_deny.is_some() || c.auth_on_body;
        if !whole {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        if let Some(word) = &c.request_body_deny {
            if String::from_utf8_lossy(&body).contains(word.as_str()) {
                self.send_http_response(
                    403,
                    vec![("x-denied-by", c.name.as_str())],
                    Some(b"body denied by abi-probe\n"),
                );
                return Action::Pause;
            }
        }
        if let Some((from, to)) = &c.request_body_replace {
            let new = String::from_utf8_lossy(&body).replace(from.as_str(), to);
            self.set_http_request_body(0, body_size, new.as_bytes());
        }
        if let (Some(cluster), true) = (c.auth_cluster.clone(), c.auth_on_body) {
            return self.call_auth(&cluster, Some(&body));
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _n: usize) -> Action {
        for (k, v) in &self.config.request_trailers_add.clone() {
            self.add_http_request_trailer(k, v);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let c = self.config.clone();
        self.response_body_calls += 1;
        if self.response_body_calls == 2
            && !end_of_stream
            && c.reset_body_path.as_deref() == Some(&self.path)
        {
            self.reset_http_response();
            return Action::Continue;
        }
        if let Some((from, to)) = &c.response_body_replace {
            if !end_of_stream {
                return Action::Pause;
            }
            let body = self
                .get_http_response_body(0, body_size)
                .unwrap_or_default();
            let new = String::from_utf8_lossy(&body).replace(from.as_str(), to);
            self.set_http_response_body(0, body_size, new.as_bytes());
        }
        if c.auth_on_response_body && !end_of_stream {
            return Action::Pause;
        }
        if let (Some(cluster), true, true) = (
            c.auth_cluster.clone(),
            c.auth_on_response_body,
            end_of_stream,
        ) {
            let body = self
                .get_http_response_body(0, body_size)
                .unwrap_or_default();
            self.response_call_at = Some(body_size);
            return self.call_auth(&cluster, Some(&body));
        }
        if end_of_stream {
            if let Some(suffix) = &c.response_body_suffix {
                self.set_http_response_body(body_size, 0, suffix.as_bytes());
            }
            for (k, v) in &c.response_trailers_add {
                self.add_http_response_trailer(k, v);
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if !self.config.log_properties.is_empty() {
            let mut logged: Vec<String> = self
                .config
                .log_properties
                .iter()
                .map(|p| {
                    let value = display(p, self.get_property(p.split('.').collect()));
                    format!("{p}={value}")
                })
                .collect();
            // And how often the body callbacks ran.
            logged.push(format!("request_body_calls={}", self.request_body_calls));
            logged.push(format!("response_body_calls={}", self.response_body_calls));
            let _ =
                self.set_shared_data("logged-properties", Some(logged.join(";").as_bytes()), None);
        }
        log::info!(
            "abi-probe[{}] #{} done {}",
            self.config.name,
            self.id,
            self.path
        );
    }
}

// The SDK's `send_http_response` passes no details; this is the same import with them.
#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
}

fn send_with_details(status: u32, details: &str, body: &[u8]) {
    // SAFETY: the pointers and sizes describe live slices for the duration of the call.
    let result = unsafe {
        proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            std::ptr::null(),
            0,
            -1,
        )
    };
    assert_eq!(result, 0, "proxy_send_local_response");
}
