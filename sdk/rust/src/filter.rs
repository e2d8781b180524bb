//! Typed HTTP filters: the `http-filter` world of `wit/gateway`.
//!
//! A filter implements [`HttpFilter`]: `configure` turns the filter's configuration into
//! settings once per instance, `new` makes the state of one request, and the phase methods
//! see the request, response and body as handles to the gateway's own copies (reading a
//! header copies that header only). Export it with [`export_http_filter!`](crate::export_http_filter).
//!
//! ```ignore
//! use std::rc::Rc;
//! use rustygate_sdk::filter::{Action, HttpFilter, LocalResponse, Request};
//!
//! struct RequireKey;
//!
//! impl HttpFilter for RequireKey {
//!     type Config = ();
//!     fn configure(_config: &str) -> Result<(), String> {
//!         Ok(())
//!     }
//!     fn new(_config: Rc<()>) -> Self {
//!         RequireKey
//!     }
//!     fn on_request_headers(&mut self, request: &Request, _end_of_stream: bool) -> Action {
//!         match request.header("x-api-key") {
//!             Some(_) => Action::Continue,
//!             None => Action::Respond(LocalResponse::new(401).body("missing API key\n")),
//!         }
//!     }
//! }
//!
//! rustygate_sdk::export_http_filter!(RequireKey);
//! ```

use std::rc::Rc;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "http-filter",
        path: "../../wit/gateway",
        pub_export_macro: true,
        export_macro_name: "__export_http_filter",
        default_bindings_module: "rustygate_sdk::filter::bindings",
    });
}

pub use bindings::rustygate::gateway::http::{
    Body, EditError, OutboundResponse as CallResponse, Phases, Request, Response,
};

/// A request to one of the gateway's clusters, which the gateway sends for the filter
/// ([`Action::Call`]); the answer comes to [`HttpFilter::on_call_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRequest {
    pub cluster: String,
    pub method: String,
    /// Path and query.
    pub path: String,
    /// `Host`; the cluster's name when empty.
    pub authority: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// 0: no timeout of its own (the route's timeout still bounds the wait).
    pub timeout_ms: u32,
}

impl CallRequest {
    /// `method path` to `cluster`, no headers, no body, no timeout of its own.
    pub fn new(
        cluster: impl Into<String>,
        method: impl Into<String>,
        path: impl Into<String>,
    ) -> Self {
        Self {
            cluster: cluster.into(),
            method: method.into(),
            path: path.into(),
            authority: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: 0,
        }
    }

    /// A `GET` of `path` on `cluster`.
    pub fn get(cluster: impl Into<String>, path: impl Into<String>) -> Self {
        Self::new(cluster, "GET", path)
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn authority(mut self, authority: impl Into<String>) -> Self {
        self.authority = authority.into();
        self
    }

    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.timeout_ms = ms;
        self
    }
}

impl CallResponse {
    /// The first value of a header of the answer (names compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An answer the filter gives instead of the upstream's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl LocalResponse {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// A JSON body with its content type.
    pub fn json(self, body: impl Into<Vec<u8>>) -> Self {
        self.header("content-type", "application/json").body(body)
    }
}

/// What a header phase decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Go on to the next filter, then the upstream (or the client).
    Continue,
    /// Answer now. The answer still passes the response phases of this filter and of those
    /// before it.
    Respond(LocalResponse),
    /// In the request headers phase (or [`HttpFilter::on_call_response`]): send this request,
    /// hold the filtered request until the answer comes, then call
    /// [`HttpFilter::on_call_response`]. Elsewhere it fails the request.
    Call(CallRequest),
}

/// What a body phase decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyAction {
    /// Pass on everything held.
    Continue,
    /// Keep it: the next call sees it followed by the next chunk (at the end of the body this
    /// means `Continue`).
    Buffer,
    Respond(LocalResponse),
}

/// A typed HTTP filter. One value of the implementing type exists per request.
pub trait HttpFilter: Sized + 'static {
    /// Settings shared by every request on this instance, made once by [`HttpFilter::configure`].
    type Config: 'static;

    /// Builds the settings from the filter's `configuration` (JSON text, `null` when absent;
    /// see [`crate::config::parse`]). An error refuses the gateway configuration with this
    /// message.
    fn configure(config: &str) -> Result<Self::Config, String>;

    /// The phases to run; the gateway makes no other calls. Both header phases by default; a
    /// filter that reads bodies adds [`Phases::REQUEST_BODY`] / [`Phases::RESPONSE_BODY`].
    fn phases(config: &Self::Config) -> Phases {
        let _ = config;
        Phases::REQUEST_HEADERS | Phases::RESPONSE_HEADERS
    }

    /// The state of one request.
    fn new(config: Rc<Self::Config>) -> Self;

    fn on_request_headers(&mut self, request: &Request, end_of_stream: bool) -> Action {
        let _ = (request, end_of_stream);
        Action::Continue
    }

    fn on_request_body(
        &mut self,
        request: &Request,
        body: &Body,
        end_of_stream: bool,
    ) -> BodyAction {
        let _ = (request, body, end_of_stream);
        BodyAction::Continue
    }

    fn on_response_headers(
        &mut self,
        request: &Request,
        response: &Response,
        end_of_stream: bool,
    ) -> Action {
        let _ = (request, response, end_of_stream);
        Action::Continue
    }

    fn on_response_body(
        &mut self,
        request: &Request,
        response: &Response,
        body: &Body,
        end_of_stream: bool,
    ) -> BodyAction {
        let _ = (request, response, body, end_of_stream);
        BodyAction::Continue
    }

    /// The answer to the [`Action::Call`] this request asked for, or why there is none
    /// (unknown cluster, refused connection, timeout). May call again.
    fn on_call_response(
        &mut self,
        request: &Request,
        response: Result<CallResponse, String>,
    ) -> Action {
        let _ = (request, response);
        Action::Continue
    }
}

#[doc(hidden)]
pub mod glue {
    use super::bindings::rustygate::gateway::http as wit;
    use super::{Action, BodyAction, LocalResponse};

    fn local(r: LocalResponse) -> wit::LocalResponse {
        wit::LocalResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }

    pub fn action(a: Action) -> wit::Action {
        match a {
            Action::Continue => wit::Action::Continue,
            Action::Respond(r) => wit::Action::Respond(local(r)),
            Action::Call(c) => wit::Action::Call(wit::OutboundRequest {
                cluster: c.cluster,
                method: c.method,
                path: c.path,
                authority: c.authority,
                headers: c.headers,
                body: c.body,
                timeout_ms: c.timeout_ms,
            }),
        }
    }

    pub fn body_action(a: BodyAction) -> wit::BodyAction {
        match a {
            BodyAction::Continue => wit::BodyAction::Continue,
            BodyAction::Buffer => wit::BodyAction::Buffer,
            BodyAction::Respond(r) => wit::BodyAction::Respond(local(r)),
        }
    }
}

/// Exports an [`HttpFilter`] implementation as the component's `filter` interface. On other
/// targets than wasm32 it exports nothing, so the filter's crate still builds and runs its
/// unit tests natively.
#[macro_export]
macro_rules! export_http_filter {
    ($filter:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::filter::bindings::exports::rustygate::gateway::filter as __wit;
            use $crate::filter::bindings::rustygate::gateway::http as __http;

            ::std::thread_local! {
                static __CONFIG: ::core::cell::RefCell<
                    ::core::option::Option<::std::rc::Rc<<$filter as $crate::filter::HttpFilter>::Config>>,
                > = const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct __Export;

            impl __wit::Guest for __Export {
                type HttpContext = __Context;

                fn configure(config: ::std::string::String) -> ::core::result::Result<__http::Phases, ::std::string::String> {
                    // Panic messages go to the gateway's log: a component has no stderr.
                    ::std::panic::set_hook(::std::boxed::Box::new(|info| {
                        $crate::log::write($crate::log::Level::Error, &info.to_string());
                    }));
                    let config = <$filter as $crate::filter::HttpFilter>::configure(&config)?;
                    let phases = <$filter as $crate::filter::HttpFilter>::phases(&config);
                    __CONFIG.with(|c| *c.borrow_mut() = ::core::option::Option::Some(::std::rc::Rc::new(config)));
                    ::core::result::Result::Ok(phases)
                }
            }

            struct __Context(::core::cell::RefCell<$filter>);

            impl __wit::GuestHttpContext for __Context {
                fn new() -> Self {
                    let config = __CONFIG
                        .with(|c| c.borrow().clone())
                        .expect("the gateway configures a filter before its first request");
                    __Context(::core::cell::RefCell::new(
                        <$filter as $crate::filter::HttpFilter>::new(config),
                    ))
                }

                fn on_request_headers(&self, request: &__http::Request, end_of_stream: bool) -> __http::Action {
                    $crate::filter::glue::action(
                        $crate::filter::HttpFilter::on_request_headers(&mut *self.0.borrow_mut(), request, end_of_stream),
                    )
                }

                fn on_request_body(
                    &self,
                    request: &__http::Request,
                    body: &__http::Body,
                    end_of_stream: bool,
                ) -> __http::BodyAction {
                    $crate::filter::glue::body_action($crate::filter::HttpFilter::on_request_body(
                        &mut *self.0.borrow_mut(),
                        request,
                        body,
                        end_of_stream,
                    ))
                }

                fn on_response_headers(
                    &self,
                    request: &__http::Request,
                    response: &__http::Response,
                    end_of_stream: bool,
                ) -> __http::Action {
                    $crate::filter::glue::action($crate::filter::HttpFilter::on_response_headers(
                        &mut *self.0.borrow_mut(),
                        request,
                        response,
                        end_of_stream,
                    ))
                }

                fn on_response_body(
                    &self,
                    request: &__http::Request,
                    response: &__http::Response,
                    body: &__http::Body,
                    end_of_stream: bool,
                ) -> __http::BodyAction {
                    $crate::filter::glue::body_action($crate::filter::HttpFilter::on_response_body(
                        &mut *self.0.borrow_mut(),
                        request,
                        response,
                        body,
                        end_of_stream,
                    ))
                }

                fn on_call_response(
                    &self,
                    request: &__http::Request,
                    response: ::core::result::Result<__http::OutboundResponse, ::std::string::String>,
                ) -> __http::Action {
                    $crate::filter::glue::action($crate::filter::HttpFilter::on_call_response(
                        &mut *self.0.borrow_mut(),
                        request,
                        response,
                    ))
                }
            }

            $crate::filter::bindings::__export_http_filter!(__Export with_types_in $crate::filter::bindings);
        };
    };
}

/// The filter's key-value store: shared by every instance of this filter on every worker,
/// kept across reloads; each filter (by name) has its own keys.
pub mod kv {
    use super::bindings::rustygate::gateway::kv;

    /// The value of `key` and its version.
    pub fn get(key: &str) -> Option<(Vec<u8>, u64)> {
        kv::get(key)
    }

    /// Sets `key`; with `expected`, only if it is still at that version (0: absent). Returns
    /// the new version, or the current one as the error.
    pub fn set(key: &str, value: &[u8], expected: Option<u64>) -> Result<u64, u64> {
        kv::set(key, value, expected)
    }

    /// Adds `delta` to the counter at `key` (absent: 0) and returns the result, atomically
    /// across workers.
    pub fn increment(key: &str, delta: i64) -> i64 {
        kv::increment(key, delta)
    }

    pub fn delete(key: &str) {
        kv::delete(key)
    }
}

/// The gateway's exact rate limiter: fixed windows counted across all workers (the same
/// counters `filters/rate-limit` uses).
pub mod rate_limit {
    pub use super::bindings::rustygate::gateway::rate_limit::Decision;

    /// Counts one request against `key`, allowing `limit` per `window_ms`.
    pub fn check(key: &str, limit: u32, window_ms: u64) -> Decision {
        super::bindings::rustygate::gateway::rate_limit::check(key, limit, window_ms)
    }
}
