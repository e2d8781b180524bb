//! The admin listener: a separate port (loopback by default) for operators, never mixed with
//! traffic.
//!
//! - `/metrics` (Prometheus text), `/healthz` (the process is alive) and `/readyz` (accepting
//!   traffic; 503 while draining) are unauthenticated, so probes and scrapers need no secret.
//! - `/admin/*` changes or reveals configuration and needs `Authorization: Bearer <token>`
//!   (compared in constant time). Without a configured token every `/admin/*` request is
//!   refused: the API is off until an operator turns it on.
//!
//! What the `/admin/*` endpoints do is behind [`Operations`], so this crate knows HTTP and
//! authentication, not how a reload works.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustygate_telemetry::Metrics;
use tokio::net::TcpListener;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// An admin answer: status and JSON body.
pub type Answer = (StatusCode, serde_json::Value);

/// What the `/admin/*` endpoints act on.
pub trait Operations: Send + Sync {
    /// `POST /admin/reload`: reload now, even if no file changed.
    fn reload(&self) -> BoxFuture<Answer>;
    /// `GET /admin/config`: the effective configuration, secrets redacted.
    fn config(&self) -> serde_json::Value;
    /// `GET /admin/filters`: loaded modules and their VMs.
    fn filters(&self) -> serde_json::Value;
    /// `GET /admin/clusters`: clusters, endpoints and their health.
    fn clusters(&self) -> serde_json::Value;
}

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// The gateway's metrics.
    pub metrics: Metrics,
    /// Whether the gateway is accepting traffic.
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The `/admin/*` operations; `None` answers them 404.
    pub operations: Option<Arc<dyn Operations>>,
    /// The bearer token `/admin/*` requires; `None` or empty refuses every request.
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState").finish_non_exhaustive()
    }
}

/// Serves admin requests on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: impl Future<Output = ()>) {
    let upkeep_metrics = state.metrics.clone();
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep_metrics.upkeep();
        }
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "admin connection error");
            }
        });
    }
    upkeep.abort();
}

async fn route(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path.starts_with("/admin/") {
        return admin(state, &req).await;
    }
    match (req.method(), path) {
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.render(),
        ),
        (&Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        (&Method::GET, "/readyz") => {
            if (state.ready)() {
                json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
            } else {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"status": "draining"}),
                )
            }
        }
        (_, "/metrics" | "/healthz" | "/readyz") => method_not_allowed(),
        _ => not_found(),
    }
}

async fn admin(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(ops) = &state.operations else {
        return not_found();
    };
    if let Err(detail) = authorize(state.token.as_deref(), req) {
        let mut r = json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"error": "unauthorized", "detail": detail}),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"rustygate-admin\""),
        );
        return r;
    }
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/admin/reload") => {
            let (status, body) = ops.reload().await;
            json(status, &body)
        }
        (&Method::GET, "/admin/config") => json(StatusCode::OK, &ops.config()),
        (&Method::GET, "/admin/filters") => json(StatusCode::OK, &ops.filters()),
        (&Method::GET, "/admin/clusters") => json(StatusCode::OK, &ops.clusters()),
        (_, "/admin/reload" | "/admin/config" | "/admin/filters" | "/admin/clusters") => {
            method_not_allowed()
        }
        _ => not_found(),
    }
}

fn authorize(token: Option<&str>, req: &Request<Incoming>) -> Result<(), &'static str> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err("the admin API is disabled: no admin.token is configured");
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or("a bearer token is required")?;
    if constant_time_eq(presented.trim().as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err("invalid token")
    }
}

/// Equal inputs, compared without an early exit, so the time taken says nothing about how
/// many leading bytes of a guess were right. (The length is not secret.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    diff == 0
}

fn method_not_allowed() -> Response<Full<Bytes>> {
    json(
        StatusCode::METHOD_NOT_ALLOWED,
        &serde_json::json!({"error": "method_not_allowed"}),
    )
}

fn not_found() -> Response<Full<Bytes>> {
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"error": "not_found"}),
    )
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_string_pretty(body).unwrap_or_default();
    text.push('\n');
    self::text(status, "application/json", text)
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret!"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
