//! A cluster's balancer component on one worker: offers it the endpoints in rotation (again
//! whenever that set changes), asks it for each attempt's endpoint, reports outcomes, and
//! says when its answer cannot be used so the caller falls back to the native round-robin.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use rustygate_config::HashKey;
use rustygate_filter_api::{Balancer, BalancerEndpoint, PickOutcome, PickRequest};
use rustygate_telemetry::Metrics;

use crate::snapshot::ClusterEntry;

/// What a balancer sees of a request, taken before the first attempt.
pub(crate) struct PickInfo {
    pub method: http::Method,
    pub path: String,
    pub host: Option<String>,
    pub hash_key: Option<String>,
}

impl PickInfo {
    /// The request as `cluster`'s balancer sees it.
    pub fn new(
        cluster: &ClusterEntry,
        method: &http::Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Self {
        let host = headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .map(str::to_owned);
        let hash_key = match &cluster.hash_key {
            None => None,
            Some(HashKey::Header(name)) => headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            Some(HashKey::Cookie(name)) => cookie(headers, name),
            Some(HashKey::ClientIp) => Some(client.to_string()),
        };
        Self {
            method: method.clone(),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            host,
            hash_key,
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// A balancer component for one cluster on this worker.
pub(crate) struct Strategy {
    balancer: Box<dyn Balancer>,
    name: Arc<str>,
    /// Which endpoints were offered last (by index); empty before the first offer.
    offered: Vec<bool>,
    /// Whether the last offer was made in panic mode.
    panic: bool,
    scratch: Vec<bool>,
    metrics: Metrics,
}

impl Strategy {
    pub fn new(balancer: Box<dyn Balancer>, name: Arc<str>, metrics: Metrics) -> Self {
        Self {
            balancer,
            name,
            offered: Vec::new(),
            panic: false,
            scratch: Vec::new(),
            metrics,
        }
    }

    /// The endpoint the balancer picks among those `usable`, or `None` when the caller should
    /// pick natively (no opinion, a failure, or an answer outside the offer).
    pub fn pick(
        &mut self,
        cluster: &ClusterEntry,
        now_ms: u64,
        usable: impl Fn(usize) -> bool,
        panic: bool,
        request: &PickInfo,
    ) -> Option<usize> {
        self.scratch.clear();
        self.scratch
            .extend((0..cluster.endpoints.len()).map(&usable));
        if self.scratch != self.offered || panic != self.panic {
            let endpoints: Vec<BalancerEndpoint> = cluster
                .endpoints
                .iter()
                .enumerate()
                .filter(|(i, _)| self.scratch[*i])
                .map(|(i, e)| BalancerEndpoint {
                    id: i as u32,
                    address: e.authority.clone(),
                    weight: e.weight,
                    healthy: e.state.available(now_ms),
                    zone: e.zone.clone(),
                    metadata: e.metadata.clone(),
                })
                .collect();
            std::mem::swap(&mut self.offered, &mut self.scratch);
            self.panic = panic;
            if let Err(e) = self.balancer.set_endpoints(&endpoints) {
                // Offered again on the next pick, to a rebuilt instance.
                self.offered.clear();
                self.failed(cluster, e.reason);
                return None;
            }
        }
        let request = PickRequest {
            method: request.method.as_str(),
            path: &request.path,
            host: request.host.as_deref(),
            hash_key: request.hash_key.as_deref(),
        };
        match self.balancer.pick(&request) {
            Ok(None) => None,
            Ok(Some(id)) if self.offered.get(id as usize) == Some(&true) => Some(id as usize),
            Ok(Some(id)) => {
                tracing::error!(target: "balancer", cluster = &*cluster.name, balancer = &*self.name, id, "balancer picked an endpoint it was not offered");
                self.failed(cluster, "bad_pick");
                None
            }
            Err(e) => {
                self.failed(cluster, e.reason);
                None
            }
        }
    }

    /// Tells the balancer how an attempt to endpoint `idx` ended.
    pub fn report(&mut self, idx: usize, outcome: PickOutcome) {
        self.balancer.report(idx as u32, outcome);
    }

    fn failed(&self, cluster: &ClusterEntry, reason: &'static str) {
        self.metrics
            .balancer_failures(&cluster.name, &self.name, reason)
            .increment(1);
    }
}
