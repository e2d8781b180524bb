//! The host side of the world's imports: the request, response and body handles (resolved to
//! the current call's [`Exchange`](rustygate_filter_api::Exchange)), logging, the key-value store and the rate limiter.

use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use rustygate_filter_api::Direction;
use wasmtime::component::Resource;

use super::State;
use super::bindings::rustygate::gateway::{http as gw, kv, log, rate_limit};

/// Handle reps: one request and one response per call; bodies by direction.
pub(super) const REQUEST_BODY: u32 = 0;
pub(super) const RESPONSE_BODY: u32 = 1;

fn header_name(name: &str) -> Result<HeaderName, gw::EditError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| gw::EditError::InvalidName)
}

fn header_value(value: &str) -> Result<HeaderValue, gw::EditError> {
    HeaderValue::from_str(value).map_err(|_| gw::EditError::InvalidValue)
}

pub(super) fn text(v: &HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

fn first(map: &HeaderMap, name: &str) -> Option<String> {
    map.get(HeaderName::from_bytes(name.as_bytes()).ok()?)
        .map(text)
}

fn all(map: &HeaderMap, name: &str) -> Vec<String> {
    HeaderName::from_bytes(name.as_bytes())
        .map(|n| map.get_all(n).iter().map(text).collect())
        .unwrap_or_default()
}

pub(super) fn pairs(map: &HeaderMap) -> Vec<(String, String)> {
    map.iter().map(|(n, v)| (n.to_string(), text(v))).collect()
}

/// A header edit on `map`: set (replace all), add, or remove.
enum Edit {
    Set(String),
    Add(String),
    Remove,
}

fn edit(map: &mut HeaderMap, name: &str, how: Edit) -> Result<(), gw::EditError> {
    let name = header_name(name)?;
    match how {
        Edit::Set(v) => {
            map.insert(name, header_value(&v)?);
        }
        Edit::Add(v) => {
            map.append(name, header_value(&v)?);
        }
        Edit::Remove => {
            map.remove(name);
        }
    }
    Ok(())
}

impl State {
    fn edit_request(&mut self, name: &str, how: Edit) -> Result<(), gw::EditError> {
        if !self.request_writable {
            return Err(gw::EditError::ReadOnly);
        }
        let ex = self.exchange();
        // `Host` is the authority: the gateway keeps it apart from the other headers.
        if name.eq_ignore_ascii_case("host") {
            return match how {
                Edit::Set(v) | Edit::Add(v) => self.set_authority(v),
                Edit::Remove => Err(gw::EditError::InvalidName),
            };
        }
        edit(&mut ex.request.borrow_mut().headers, name, how)?;
        ex.request_changed.set(true);
        Ok(())
    }

    fn set_authority(&mut self, authority: String) -> Result<(), gw::EditError> {
        if !self.request_writable {
            return Err(gw::EditError::ReadOnly);
        }
        ::http::uri::Authority::from_str(&authority).map_err(|_| gw::EditError::InvalidValue)?;
        let ex = self.exchange();
        ex.request.borrow_mut().authority = authority;
        ex.request_changed.set(true);
        Ok(())
    }

    fn edit_response(&mut self, name: &str, how: Edit) -> Result<(), gw::EditError> {
        let ex = self.exchange();
        let mut response = ex.response.borrow_mut();
        let response = response.as_mut().ok_or(gw::EditError::ReadOnly)?;
        edit(&mut response.headers, name, how)
    }

    fn body(
        &self,
        handle: &Resource<gw::Body>,
    ) -> std::cell::RefMut<'_, rustygate_filter_api::BodyBuffer> {
        let direction = if handle.rep() == RESPONSE_BODY {
            Direction::Response
        } else {
            Direction::Request
        };
        self.exchange().body(direction).borrow_mut()
    }
}

impl gw::Host for State {}

impl gw::HostRequest for State {
    fn method(&mut self, _: Resource<gw::Request>) -> String {
        self.exchange().request.borrow().method.as_str().to_owned()
    }

    fn path(&mut self, _: Resource<gw::Request>) -> String {
        self.exchange().request.borrow().path.clone()
    }

    fn set_path(&mut self, _: Resource<gw::Request>, path: String) -> Result<(), gw::EditError> {
        if !self.request_writable {
            return Err(gw::EditError::ReadOnly);
        }
        if !path.starts_with('/') || ::http::uri::PathAndQuery::from_str(&path).is_err() {
            return Err(gw::EditError::InvalidValue);
        }
        let ex = self.exchange();
        ex.request.borrow_mut().path = path;
        ex.request_changed.set(true);
        Ok(())
    }

    fn authority(&mut self, _: Resource<gw::Request>) -> String {
        self.exchange().request.borrow().authority.clone()
    }

    fn set_authority(
        &mut self,
        _: Resource<gw::Request>,
        authority: String,
    ) -> Result<(), gw::EditError> {
        State::set_authority(self, authority)
    }

    fn scheme(&mut self, _: Resource<gw::Request>) -> String {
        self.exchange().request.borrow().scheme.to_owned()
    }

    fn header(&mut self, _: Resource<gw::Request>, name: String) -> Option<String> {
        let request = self.exchange().request.borrow();
        if name.eq_ignore_ascii_case("host") {
            return Some(request.authority.clone());
        }
        first(&request.headers, &name)
    }

    fn header_all(&mut self, _: Resource<gw::Request>, name: String) -> Vec<String> {
        let request = self.exchange().request.borrow();
        if name.eq_ignore_ascii_case("host") {
            return vec![request.authority.clone()];
        }
        all(&request.headers, &name)
    }

    fn headers(&mut self, _: Resource<gw::Request>) -> Vec<(String, String)> {
        let request = self.exchange().request.borrow();
        let mut out = Vec::with_capacity(request.headers.len() + 1);
        out.push(("host".to_owned(), request.authority.clone()));
        out.extend(pairs(&request.headers));
        out
    }

    fn set_header(
        &mut self,
        _: Resource<gw::Request>,
        name: String,
        value: String,
    ) -> Result<(), gw::EditError> {
        self.edit_request(&name, Edit::Set(value))
    }

    fn add_header(
        &mut self,
        _: Resource<gw::Request>,
        name: String,
        value: String,
    ) -> Result<(), gw::EditError> {
        self.edit_request(&name, Edit::Add(value))
    }

    fn remove_header(
        &mut self,
        _: Resource<gw::Request>,
        name: String,
    ) -> Result<(), gw::EditError> {
        self.edit_request(&name, Edit::Remove)
    }

    fn client_address(&mut self, _: Resource<gw::Request>) -> String {
        self.exchange().info.client.to_string()
    }

    fn id(&mut self, _: Resource<gw::Request>) -> String {
        text(&self.exchange().info.request_id)
    }

    fn route(&mut self, _: Resource<gw::Request>) -> String {
        self.exchange()
            .progress
            .route
            .borrow()
            .as_deref()
            .unwrap_or_default()
            .to_owned()
    }

    fn drop(&mut self, _: Resource<gw::Request>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl gw::HostResponse for State {
    fn status(&mut self, _: Resource<gw::Response>) -> u16 {
        self.exchange()
            .response
            .borrow()
            .as_ref()
            .map_or(0, |r| r.status.as_u16())
    }

    fn set_status(&mut self, _: Resource<gw::Response>, status: u16) -> Result<(), gw::EditError> {
        let status = StatusCode::from_u16(status).map_err(|_| gw::EditError::InvalidValue)?;
        let ex = self.exchange();
        let mut response = ex.response.borrow_mut();
        response.as_mut().ok_or(gw::EditError::ReadOnly)?.status = status;
        Ok(())
    }

    fn header(&mut self, _: Resource<gw::Response>, name: String) -> Option<String> {
        first(&self.exchange().response.borrow().as_ref()?.headers, &name)
    }

    fn header_all(&mut self, _: Resource<gw::Response>, name: String) -> Vec<String> {
        self.exchange()
            .response
            .borrow()
            .as_ref()
            .map(|r| all(&r.headers, &name))
            .unwrap_or_default()
    }

    fn headers(&mut self, _: Resource<gw::Response>) -> Vec<(String, String)> {
        self.exchange()
            .response
            .borrow()
            .as_ref()
            .map(|r| pairs(&r.headers))
            .unwrap_or_default()
    }

    fn set_header(
        &mut self,
        _: Resource<gw::Response>,
        name: String,
        value: String,
    ) -> Result<(), gw::EditError> {
        self.edit_response(&name, Edit::Set(value))
    }

    fn add_header(
        &mut self,
        _: Resource<gw::Response>,
        name: String,
        value: String,
    ) -> Result<(), gw::EditError> {
        self.edit_response(&name, Edit::Add(value))
    }

    fn remove_header(
        &mut self,
        _: Resource<gw::Response>,
        name: String,
    ) -> Result<(), gw::EditError> {
        self.edit_response(&name, Edit::Remove)
    }

    fn drop(&mut self, _: Resource<gw::Response>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl gw::HostBody for State {
    fn len(&mut self, body: Resource<gw::Body>) -> u64 {
        self.body(&body).len() as u64
    }

    fn read(&mut self, body: Resource<gw::Body>, offset: u64, len: u64) -> Vec<u8> {
        let held = self.body(&body);
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let max = usize::try_from(len).unwrap_or(usize::MAX);
        if start >= held.len() {
            return Vec::new();
        }
        held.range(start, max)
    }

    fn replace(&mut self, body: Resource<gw::Body>, data: Vec<u8>) {
        let mut held = self.body(&body);
        let len = held.len();
        let _ = held.splice(0, len, Bytes::from(data));
    }

    fn prepend(&mut self, body: Resource<gw::Body>, data: Vec<u8>) {
        let _ = self.body(&body).splice(0, 0, Bytes::from(data));
    }

    fn append(&mut self, body: Resource<gw::Body>, data: Vec<u8>) {
        let mut held = self.body(&body);
        let len = held.len();
        let _ = held.splice(len, 0, Bytes::from(data));
    }

    fn drop(&mut self, _: Resource<gw::Body>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl log::Host for State {
    fn write(&mut self, level: log::Level, message: String) {
        let filter = &*self.name;
        let request_id = self
            .current
            .as_ref()
            .map(|e| text(&e.info.request_id))
            .unwrap_or_default();
        match level {
            log::Level::Trace => tracing::trace!(target: "filter", filter, request_id, "{message}"),
            log::Level::Debug => tracing::debug!(target: "filter", filter, request_id, "{message}"),
            log::Level::Info => tracing::info!(target: "filter", filter, request_id, "{message}"),
            log::Level::Warn => tracing::warn!(target: "filter", filter, request_id, "{message}"),
            log::Level::Error => tracing::error!(target: "filter", filter, request_id, "{message}"),
        }
    }
}

impl kv::Host for State {
    fn get(&mut self, key: String) -> Option<(Vec<u8>, u64)> {
        self.services.kv.get(&self.name, &key)
    }

    fn set(&mut self, key: String, value: Vec<u8>, expected: Option<u64>) -> Result<u64, u64> {
        self.services.kv.set(&self.name, &key, value, expected)
    }

    fn increment(&mut self, key: String, delta: i64) -> i64 {
        self.services.kv.increment(&self.name, &key, delta)
    }

    fn delete(&mut self, key: String) {
        self.services.kv.delete(&self.name, &key)
    }
}

impl rate_limit::Host for State {
    fn check(&mut self, key: String, limit: u32, window_ms: u64) -> rate_limit::Decision {
        let a = self.services.rate_limiter.admit(
            key.as_bytes(),
            limit,
            Duration::from_millis(window_ms.max(1)),
            Instant::now(),
        );
        rate_limit::Decision {
            allowed: a.allowed,
            remaining: a.remaining,
            reset_ms: a.reset.as_millis().min(u64::MAX as u128) as u64,
        }
    }
}
