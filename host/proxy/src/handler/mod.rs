//! One request through the gateway: route, pick an endpoint, rewrite headers, forward with a
//! timeout, and turn every failure into a JSON error response. The request's lifecycle ends
//! in [`Completion`], when the response body is dropped, which is where the access log and
//! request metrics are written (after the last byte, so sizes and durations are complete).

use std::borrow::Cow;
use std::rc::Rc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, Version, uri::PathAndQuery};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use rustygate_config::UpstreamProtocol;
use rustygate_core::ErrorKind;
use rustygate_core::forwarding::{self, X_REQUEST_ID};
use rustygate_core::router::RequestView;
use rustygate_filter_api::{Direction, Exchange, RequestHead, StreamInfo, is_grpc_request};

mod attempts;
mod completion;
mod errors;
mod filtering;
mod form;
mod mirror;
mod switch;

use crate::body::{Replay, RequestBody, ResponseBody, Transfer};
use crate::chain::{ChainRun, RequestOutcome};
use crate::pool::{SendError, Shared, TerminateConnect, UpstreamBody};
use crate::snapshot::{NO_TIMEOUT, RouteEntry};
use crate::worker::{Active, ConnCtx, Worker};
use attempts::Failed;
use completion::LogPath;
pub(crate) use completion::{Completion, HeadAnswer, head_answered};
use errors::error_response;
use filtering::filter_failed;
use form::{address, upstream_host};
use switch::{Switch, tunnel_log};

/// A failure and its detail for the client.
type Failure = (ErrorKind, String);

/// A filter reset the client's stream. Returned to hyper, which then closes an HTTP/1.1
/// connection without a response or resets an HTTP/2 stream (`RST_STREAM`).
#[derive(Debug, thiserror::Error)]
#[error("a filter reset the stream")]
pub(crate) struct StreamReset;

/// Serves one request. Failures are responses; only a filter's reset fails at the hyper level.
pub(crate) async fn handle(
    worker: Rc<Worker>,
    conn: Rc<ConnCtx>,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, StreamReset> {
    // The poll's time (`LoopClock`): this poll read the head, or its last bytes.
    let start = worker.clock.now();
    conn.request_started(start);
    worker.shared.in_flight.increment(worker.id);
    // Before anything reads the path: routes, filters, logs and the upstream all see the
    // canonical one.
    let refused = form::refused(&conn, req.uri_mut());
    let extended = switch::extended_connect(&mut req, &worker.rng);
    let active = worker.active();
    let present = forwarding::Present::scan(req.headers());
    let request_id = forwarding::request_id(req.headers(), present, &mut worker.rng.borrow_mut());
    let transfer = Rc::new(Transfer::new(req.body().is_end_stream()));
    let trace = worker.shared.tracer.as_ref().map(|t| {
        Rc::new(t.request(
            req.headers(),
            req.method().as_str(),
            req.uri().path(),
            conn.peer.ip(),
        ))
    });
    let mut done = Completion {
        worker: worker.clone(),
        conn,
        start,
        method: req.method().clone(),
        // Only the access log needs it once the request has gone.
        path: active
            .snapshot
            .access_log
            .then(|| LogPath::of(req.method(), req.uri()))
            .flatten(),
        version: req.version(),
        request_id: request_id.clone(),
        route: None,
        upstream: None,
        cluster: None,
        status: 0,
        access_log: active.snapshot.access_log,
        active: active.clone(),
        cluster_slot: None,
        transfer: transfer.clone(),
        chain: None,
        trace,
        outcome: Default::default(),
        body_len: None,
    };
    let conn = done.conn.clone();
    // gRPC is always a POST: other methods skip the header lookup.
    let grpc = req.method() == Method::POST && is_grpc_request(req.headers());
    let mut refused_as = None;
    let forwarded = match refused {
        Some((fault, details)) => {
            refused_as = Some(details);
            Err(fault)
        }
        None => {
            forward(
                &worker,
                &conn,
                &active,
                (req, present),
                &request_id,
                &transfer,
                &mut done,
            )
            .await
        }
    };
    let resp = match forwarded {
        Ok(resp) => resp,
        Err((kind, detail)) => {
            if done.chain.as_ref().is_some_and(|c| c.reset.get()) {
                // A filter closed the stream: Envoy's words for it, unless the response
                // already had some (`via_upstream`, when it closed in a response phase).
                let outcome = done.outcome();
                if outcome.details().is_empty() {
                    outcome.set_details("wasm_close_stream");
                }
            } else {
                completion::record_failure(done.outcome(), kind);
                if let Some(details) = refused_as {
                    done.outcome().set_details(details);
                }
            }
            error_response(kind, &detail, &request_id, grpc)
        }
    };
    if done.chain.as_ref().is_some_and(|c| c.reset.get()) {
        // Logged with status 0, as Envoy logs a stream that got no response.
        drop(resp);
        done.finish();
        return Err(StreamReset);
    }
    done.status = resp.status().as_u16();
    let idle = stream_idle_timeout(
        &conn,
        done.route.map(|i| &active.snapshot.routes[i as usize]),
    );
    let (mut parts, body) = resp.into_parts();
    if extended {
        rustygate_core::extended_connect::answer(&mut parts.status, &mut parts.headers);
    }
    if !transfer.request_ended.get() {
        done.close_early(&conn, &mut parts);
    }
    // hyper frames an HTTP/1.1 body by its `content-length`, else by its exact size hint;
    // the two agree wherever the hint is exact, and the hint costs no header lookup.
    done.body_len = body
        .size_hint()
        .exact()
        .or_else(|| form::content_length(&parts.headers));
    if body.streams()
        && let Some(stream) = conn.stream.get()
    {
        stream.response(transfer.clone(), idle);
    }
    let body = body
        .with_completion(transfer, Box::new(move || done.finish()))
        .with_idle_timeout(idle);
    Ok(Response::from_parts(parts, body))
}

/// How long a stream may move no body byte either way: the route's `idle_timeout`, else the
/// listener's.
fn stream_idle_timeout(conn: &ConnCtx, route: Option<&RouteEntry>) -> std::time::Duration {
    route
        .and_then(|r| r.idle_timeout)
        .unwrap_or(conn.listener.limits.stream_idle_timeout.get())
}

/// How long the upstream has for its response head: the route's timeout, or, where the route
/// turned that off, the stream idle timeout, since nothing moves while the head is awaited.
fn head_timeout(conn: &ConnCtx, route: &RouteEntry) -> std::time::Duration {
    match stream_idle_timeout(conn, Some(route)) {
        idle if route.timeout == NO_TIMEOUT && !idle.is_zero() => idle,
        _ => route.timeout,
    }
}

/// `present`: what [`forwarding::Present::scan`] found in `req`'s headers.
async fn forward(
    worker: &Rc<Worker>,
    conn: &ConnCtx,
    active: &Active,
    (req, present): (Request<Incoming>, forwarding::Present),
    request_id: &HeaderValue,
    transfer: &Rc<Transfer>,
    done: &mut Completion,
) -> Result<Response<ResponseBody>, Failure> {
    let snapshot = &active.snapshot;
    let (mut parts, body) = req.into_parts();
    // hyper marks an HTTP/1.1 request carrying `Upgrade`, and a CONNECT, with an `OnUpgrade`:
    // every other request, nearly all of them, skips the header lookups.
    let connect = parts.method == Method::CONNECT;
    let upgrade = match parts.extensions.get::<OnUpgrade>() {
        _ if connect => Some(switch::connect_target(&parts.uri)?),
        Some(_) => forwarding::upgrade_requested(&parts.headers).cloned(),
        None => None,
    };
    let host = form::request_host(&mut parts)?;
    // Connection-level rules come first, so routes match and filters see the request as the
    // upstream will (as in Envoy, whose connection manager adds these before it picks the
    // route): a route can match the X-Forwarded-Proto or X-Forwarded-For the gateway sets.
    forwarding::strip_hop_by_hop(&mut parts.headers, present, true);
    let client_cert_header = present.client_cert();
    if parts.version == Version::HTTP_2 {
        forwarding::join_cookies(&mut parts.headers);
    }
    let tls = conn.tls.get();
    let verified = tls.is_some_and(|t| t.peer_certificate_sha256.is_some());
    if client_cert_header || verified {
        let cert = tls.and_then(|t| {
            Some(forwarding::ClientCert {
                sha256: t.peer_certificate_sha256.as_deref()?,
                subject: t.peer_subject.as_deref(),
                uris: &t.peer_uri_sans,
                dns: &t.peer_dns_sans,
            })
        });
        forwarding::forward_client_cert(
            &mut parts.headers,
            conn.listener.forward_client_cert,
            &conn.listener.client_cert_details,
            cert.as_ref(),
        );
    }
    if let Some(u) = upgrade.as_ref().filter(|_| !connect) {
        forwarding::keep_upgrade(&mut parts.headers, u.clone());
    }
    // We answer `Expect: 100-continue` ourselves (hyper sends 100 when the body is first
    // read), so it must not reach the upstream as well.
    if present.expect() {
        parts.headers.remove(header::EXPECT);
    }
    forwarding::set_forwarded(
        &mut parts.headers,
        present,
        &conn.peer_value,
        conn.listener.scheme,
        host.as_ref(),
    );
    parts
        .headers
        .insert(X_REQUEST_ID.clone(), request_id.clone());
    let view = RequestView {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        host: host.as_ref().and_then(|h| h.to_str().ok()),
        scheme: conn.listener.scheme,
        headers: &parts.headers,
    };
    let Some(route_idx) = snapshot.router.find(&view) else {
        return Err((
            ErrorKind::NoRoute,
            format!("{} {}", parts.method, parts.uri.path()),
        ));
    };
    let mut route = &snapshot.routes[route_idx];
    done.route = Some(route_idx as u32);
    if let Some(t) = &done.trace {
        t.set_route(&route.name);
    }
    if let Some(u) = &upgrade
        && !route.allows_upgrade(u.to_str().unwrap_or_default())
    {
        let asked = String::from_utf8_lossy(u.as_bytes());
        let asked = if connect {
            asked
        } else {
            format!("Upgrade: {asked}").into()
        };
        return Err((
            ErrorKind::UpgradeRefused,
            format!("route {} does not allow {asked}", route.name),
        ));
    }
    // The client's side of the switch, resolved by hyper once our 101 (or a CONNECT's 2xx)
    // has been written.
    let client_upgrade = upgrade
        .as_ref()
        .and_then(|_| parts.extensions.remove::<OnUpgrade>());

    let limit = route
        .max_request_body_bytes
        .or(conn.listener.limits.max_request_body_bytes);
    let max_held = conn.listener.limits.max_buffered_body_bytes;
    // hyper's exact size hint is the declared `Content-Length` (HTTP/1.1 and HTTP/2 alike),
    // without a header lookup.
    if let (Some(limit), Some(len)) = (limit, body.size_hint().exact())
        && len > limit
    {
        return Err((
            ErrorKind::BodyTooLarge,
            format!("{len} bytes declared, limit is {limit}"),
        ));
    }

    // Picked before the filters run, so they see it (`cluster_name`); `None` when the route
    // answers by itself.
    let mut cluster = route.targets.pick(&worker.rng);

    let chain = active.chain(route_idx);
    // Borrowed from the request's host unless a filter rewrote it.
    let mut authority: Option<Cow<'_, str>> = host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .map(Cow::Borrowed);
    let mut run = None;
    let mut authority_changed = false;
    if !chain.is_empty() {
        // Filters see the host as `:authority` only, as in Envoy; it is put back below.
        parts.headers.remove(header::HOST);
        let head = RequestHead {
            // A copy (a standard method's is a tag): compared below to see if it changed.
            method: parts.method.clone(),
            // Empty for a CONNECT's authority form: filters see no `:path`, as in Envoy.
            path: parts
                .uri
                .path_and_query()
                .map_or("", |p| p.as_str())
                .to_owned(),
            authority: authority.as_deref().unwrap_or_default().to_owned(),
            scheme: conn.listener.scheme,
            headers: std::mem::take(&mut parts.headers),
        };
        let info = StreamInfo {
            client: conn.peer,
            local: conn.local,
            request_id: request_id.clone(),
            protocol: form::protocol_name(parts.version),
            tls: conn.tls.get().cloned(),
            connection_id: conn.id,
            start: done.start,
        };
        let exchange = Exchange::shared(head, info);
        active.note_route(&exchange.progress, route_idx, cluster);
        let chain_run = ChainRun::new(
            &chain,
            active.timers(route_idx),
            exchange,
            worker.clone(),
            done.trace.clone(),
        );
        done.chain = Some(chain_run.clone());
        // An upgrade's request does not end with its head: the tunnel's bytes may follow.
        let end_of_stream = body.is_end_stream() && upgrade.is_none();
        match chain_run.request(end_of_stream, route.timeout).await {
            RequestOutcome::Forward => {}
            RequestOutcome::Respond(reply) => {
                let ctx = filtering::Ctx::new(&chain_run, route.timeout, max_held, request_id);
                return Ok(ctx.reply(reply).await);
            }
            RequestOutcome::Fail(f) => return Err(filter_failed(&f)),
            RequestOutcome::Reset => return Err(filtering::reset()),
        }
        // Whether the method, path or host changed, which may take the request elsewhere
        // whatever the router's rules; headers only matter to routes that match on them.
        let mut target_changed = false;
        {
            let head = chain_run.exchange.request.borrow();
            if parts.method != head.method {
                target_changed = true;
                parts.method = head.method.clone();
            }
            // Most filters leave the path alone: re-parse only when it changed.
            if parts.uri.path_and_query().map_or("", |p| p.as_str()) != head.path {
                target_changed = true;
                parts.uri = head.path.parse().map_err(|e| {
                    (
                        ErrorKind::Internal,
                        format!("a filter set an invalid path {:?}: {e}", head.path),
                    )
                })?;
            }
            if authority.as_deref() != Some(head.authority.as_str()) {
                target_changed = true;
                authority =
                    (!head.authority.is_empty()).then(|| Cow::Owned(head.authority.clone()));
                authority_changed = true;
            }
        }
        let changed = chain_run.exchange.request_changed.get()
            && (target_changed || snapshot.router.reads_headers());
        run = Some(chain_run);
        if changed {
            // Routed again on what the filters made of the request; its filters have run.
            let found = {
                let head = run.as_ref().expect("set above").exchange.request.borrow();
                // The filters' map holds no `Host`: conditions on it read the `:authority`
                // given here, as they read the client's `Host` the first time.
                snapshot.router.find(&RequestView {
                    method: &parts.method,
                    path: parts.uri.path(),
                    query: parts.uri.query(),
                    host: authority.as_deref(),
                    scheme: conn.listener.scheme,
                    headers: &head.headers,
                })
            };
            match found {
                Some(i) if i != route_idx => {
                    route = &snapshot.routes[i];
                    cluster = route.targets.pick(&worker.rng);
                    let progress = &run.as_ref().expect("set above").exchange.progress;
                    active.note_route(progress, i, cluster);
                    done.route = Some(i as u32);
                    if let Some(t) = &done.trace {
                        t.set_route(&route.name);
                    }
                }
                Some(_) => {}
                None => {
                    let run = run.as_ref().expect("set above");
                    let failure = (
                        ErrorKind::NoRoute,
                        format!(
                            "{} {} (as rewritten by filters)",
                            parts.method,
                            parts.uri.path()
                        ),
                    );
                    return filtering::Ctx::new(run, route.timeout, max_held, request_id)
                        .gateway_error(failure)
                        .await;
                }
            }
        }
    }

    if let Some(answer) = &route.answer {
        let mut local = filtering::answer_of(
            answer,
            conn.listener.scheme,
            authority.as_deref().unwrap_or_default(),
            parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        );
        return match &run {
            None => {
                done.outcome.set_details(std::mem::take(&mut local.details));
                if is_grpc_request(&parts.headers) {
                    local.into_grpc();
                }
                Ok(filtering::local_response(local, request_id))
            }
            Some(run) => {
                filtering::Ctx::new(run, route.timeout, max_held, request_id)
                    .answer(local)
                    .await
            }
        };
    }
    let Some(cluster_idx) = cluster else {
        return Err((
            ErrorKind::Internal,
            format!("route {} has no cluster", route.name),
        ));
    };
    let cluster = &snapshot.clusters[cluster_idx];
    let body_ended = body.is_end_stream();
    let mut shared = None;
    // The `Host` goes with the filters' fields when the upstream client writes from them.
    let mut shared_host = None;
    if let Some(run) = &run {
        let whole_read = !body_ended
            || upgrade.is_some()
            || !route.mirrors.is_empty()
            || active.has_strategy(cluster_idx);
        shared = form::hand_over(&run.exchange, &mut parts.headers, whole_read);
        let h = upstream_host(&host, authority_changed, authority.as_deref());
        match h {
            Some(h) if shared.is_some() => shared_host = Some(h),
            Some(h) => drop(parts.headers.insert(header::HOST, h)),
            None => {}
        }
    }
    let mut path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    // The route's rewrites come last, after its filters, as Envoy's router applies them.
    if let Some(rewritten) = route
        .rewrite_path
        .as_ref()
        .and_then(|rw| rw.apply(path_and_query.as_str()))
    {
        path_and_query = PathAndQuery::try_from(rewritten).map_err(|e| {
            (
                ErrorKind::Internal,
                format!(
                    "route {} rewrote the path into an invalid one: {e}",
                    route.name
                ),
            )
        })?;
    }
    if let Some(host) = &route.rewrite_host {
        authority = host.to_str().ok().map(Cow::Borrowed);
        parts.headers.insert(header::HOST, host.clone());
    }
    // A CONNECT the gateway answers itself never goes upstream as a request: the cluster's
    // protocol and the request's form do not matter to it.
    let terminate = connect && route.terminate_connect;
    if upgrade.is_some() && !terminate && cluster.settings.protocol == UpstreamProtocol::Http2 {
        return Err((
            ErrorKind::UpgradeRefused,
            format!(
                "cluster {} speaks HTTP/2 upstream; upgrades need an HTTP/1.1 cluster",
                cluster.name
            ),
        ));
    }
    // A copy could not carry a tunnel's bytes: requests that switch protocols are not copied.
    let copies = if route.mirrors.is_empty() || upgrade.is_some() {
        None
    } else {
        mirror::Copies::sample(
            worker,
            done.active.clone(),
            route,
            &parts,
            &path_and_query,
            authority.as_deref(),
            conn.peer.ip(),
        )
    };
    if !terminate {
        address(
            &mut parts,
            cluster,
            path_and_query,
            authority.as_deref(),
            &mut shared_host,
        )?;
    }
    let mut body: UpstreamBody = if body_ended {
        // Nothing to count or time: no wrapper (the empty body is zero-sized, so unboxed).
        attempts::empty()
    } else {
        Box::pin(RequestBody::new(
            body,
            limit,
            transfer.clone(),
            stream_idle_timeout(conn, Some(route)),
        ))
    };
    if let Some(run) = &run
        && !body_ended
    {
        let ctx = filtering::Ctx::new(run, route.timeout, max_held, request_id);
        match ctx
            .body(body, Direction::Request, &mut parts.headers, transfer)
            .await?
        {
            Ok(filtered) => body = filtered.into_upstream(),
            Err(answer) => return Ok(answer),
        }
    }
    // A body a retry may have to send again is read in full first (small ones only).
    let payload = if body_ended {
        attempts::Payload::Empty
    } else if attempts::buffers_body(route, cluster, &parts.method, body.size_hint().upper()) {
        match tokio::time::timeout(route.timeout, http_body_util::BodyExt::collect(body)).await {
            Ok(Ok(collected)) => {
                let trailers = collected.trailers().cloned();
                let replay = Replay::new(collected.to_bytes(), trailers);
                body = replay.body();
                attempts::Payload::Replayable(replay)
            }
            Ok(Err(_)) => {
                if let Some(run) = &run
                    && run.body_stop.borrow().is_some()
                {
                    return filtering::Ctx::new(run, route.timeout, max_held, request_id)
                        .stopped(Direction::Request, transfer)
                        .await;
                }
                if transfer.too_large.get() {
                    return Err((
                        ErrorKind::BodyTooLarge,
                        format!("limit is {} bytes", limit.unwrap_or_default()),
                    ));
                }
                if transfer.client_stalled.get() {
                    return Err(client_stalled(conn, route));
                }
                return Err((
                    ErrorKind::BadRequest,
                    "the request body could not be read".into(),
                ));
            }
            Err(_) => {
                return Err((
                    ErrorKind::UpstreamTimeout,
                    format!(
                        "the request body did not arrive within the route timeout ({:?})",
                        route.timeout
                    ),
                ));
            }
        }
    } else {
        attempts::Payload::Streamed
    };
    if let Some(copies) = copies {
        match &payload {
            attempts::Payload::Empty => copies.send(None),
            attempts::Payload::Replayable(replay) => copies.send(Some(replay.clone())),
            attempts::Payload::Streamed => body = Box::pin(mirror::Tee::new(body, copies)),
        }
    }
    let mut upstream_req = Request::from_parts(parts, body);
    if terminate {
        upstream_req.extensions_mut().insert(TerminateConnect);
    }

    let outcome = attempts::send(
        worker,
        active,
        attempts::Destination {
            timeout: head_timeout(conn, route),
            ..attempts::Destination::of(route, cluster_idx)
        },
        upstream_req,
        payload,
        attempts::Caller {
            trace: done.trace.as_deref(),
            client: conn.peer.ip(),
            shared: shared.map(|head| Shared {
                head,
                host: shared_host.as_ref(),
            }),
        },
        || {
            transfer.too_large.get()
                || transfer.client_stalled.get()
                || run.as_ref().is_some_and(|r| r.body_stop.borrow().is_some())
        },
    )
    .await;
    done.cluster = Some(cluster_idx);
    if let Some(run) = &run {
        let progress = &run.exchange.progress;
        progress.upstream.replace(outcome.endpoint.clone());
        progress.attempts.set(outcome.attempts);
    }
    done.cluster_slot = outcome.slot.map(|s| {
        // Released by `done` when the response ends (`Completion`'s drop).
        std::mem::forget(s);
        cluster_idx
    });
    done.upstream = outcome.endpoint;
    let endpoint = done.upstream.as_deref().unwrap_or("-");
    let sent = outcome.result;
    let failure = match sent {
        Ok(resp) => {
            done.outcome().set_details("via_upstream");
            let (mut parts, mut body) = resp.into_parts();
            // The client is answered in the gateway's HTTP version, not the upstream's: hyper
            // writes the version it is given, and after an HTTP/1.0 response it would close an
            // HTTP/1.1 client's keep-alive connection. (hyper answers an HTTP/1.0 client in
            // 1.0 itself; HTTP/2 ignores the field.)
            parts.version = Version::HTTP_11;
            let switch = Switch::agreed(&mut parts, &mut body, client_upgrade, connect, endpoint)?;
            let present = forwarding::Present::scan(&parts.headers);
            forwarding::strip_hop_by_hop(&mut parts.headers, present, false);
            if let Some(Switch {
                protocol: Some(p), ..
            }) = &switch
            {
                forwarding::keep_upgrade(&mut parts.headers, p.clone());
            }
            parts
                .headers
                .insert(X_REQUEST_ID.clone(), request_id.clone());
            let Some(run) = &run else {
                if let Some(switch) = switch {
                    let log = tunnel_log(done, conn, request_id);
                    switch.open(conn, parts.status, log, done, None);
                }
                return Ok(Response::from_parts(parts, ResponseBody::upstream(body)));
            };
            let ctx = filtering::Ctx::new(run, route.timeout, max_held, request_id);
            return ctx
                .upstream_response(parts, body, switch, (conn, done), transfer)
                .await;
        }
        Err(Failed::Timeout(t)) => (
            ErrorKind::UpstreamTimeout,
            format!("no response within {t:?}"),
        ),
        Err(Failed::Overflow(detail)) => (ErrorKind::UpstreamOverflow, detail),
        Err(Failed::Send(SendError::Overflow(what))) => (
            ErrorKind::UpstreamOverflow,
            format!("too many {what} for cluster {}", cluster.name),
        ),
        Err(Failed::NoEndpoint) => (
            ErrorKind::NoHealthyUpstream,
            format!("no endpoint of cluster {} is in rotation", cluster.name),
        ),
        Err(Failed::Send(SendError::Connect(e))) => (ErrorKind::UpstreamConnect, e.to_string()),
        // A filter cut the request body short (it answered, failed or buffered too much).
        Err(Failed::Send(SendError::Exchange(_)))
            if run.as_ref().is_some_and(|r| r.body_stop.borrow().is_some()) =>
        {
            let run = run.as_ref().expect("checked");
            return filtering::Ctx::new(run, route.timeout, max_held, request_id)
                .stopped(Direction::Request, transfer)
                .await;
        }
        Err(Failed::Send(SendError::Exchange(_))) if transfer.too_large.get() => {
            return Err((
                ErrorKind::BodyTooLarge,
                format!("limit is {} bytes", limit.unwrap_or_default()),
            ));
        }
        Err(Failed::Send(SendError::Exchange(_))) if transfer.client_stalled.get() => {
            return Err(client_stalled(conn, route));
        }
        Err(Failed::Send(SendError::Exchange(e))) => {
            let kind = if e.is_protocol() {
                ErrorKind::UpstreamProtocol
            } else if e.is_timeout() {
                ErrorKind::UpstreamTimeout
            } else {
                ErrorKind::UpstreamReset
            };
            (kind, format!("{endpoint}: {e}"))
        }
    };
    if outcome.attempts > 1 {
        done.outcome()
            .flag(rustygate_filter_api::outcome::flags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
    }
    worker.upstream_failure(&cluster.name, failure.0.code());
    tracing::warn!(
        cluster = &*cluster.name,
        endpoint,
        reason = failure.0.code(),
        error = %failure.1,
        request_id = request_id.to_str().unwrap_or_default(),
        "upstream request failed"
    );
    match &run {
        // As in Envoy, the gateway's own answer passes through the filters' response phases.
        Some(run) => {
            let ctx = filtering::Ctx::new(run, route.timeout, max_held, request_id);
            ctx.gateway_error(failure).await
        }
        None => Err(failure),
    }
}

/// The answer to a client whose request body stopped for the stream idle timeout.
fn client_stalled(conn: &ConnCtx, route: &RouteEntry) -> Failure {
    (
        ErrorKind::RequestTimeout,
        format!(
            "no request body byte for {:?}",
            stream_idle_timeout(conn, Some(route))
        ),
    )
}
