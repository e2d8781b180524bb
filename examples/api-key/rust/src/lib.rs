//! api-key: rejects requests without a known API key and stamps a configured header on every
//! response. The same filter exists in Go and AssemblyScript beside this directory; all three
//! behave identically.

use std::collections::HashSet;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    header_name: String,
    #[serde(default)]
    header_value: String,
    api_keys: Vec<String>,
}

struct Settings {
    header_name: String,
    header_value: String,
    keys: HashSet<String>,
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { settings: None }) });
}}

struct Root {
    // Shared with every request context; replaced as a whole on reconfiguration.
    settings: Option<Rc<Settings>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(raw) = self.get_plugin_configuration() else {
            log::error!("api-key: configuration is required");
            return false;
        };
        let config: Config = match serde_json::from_slice(&raw) {
            Ok(config) => config,
            Err(e) => {
                log::error!("api-key: invalid configuration: {e}");
                return false;
            }
        };
        if config.header_name.is_empty() {
            log::error!("api-key: configuration: header_name is required");
            return false;
        }
        if config.api_keys.is_empty() {
            log::error!("api-key: configuration: api_keys must list at least one key");
            return false;
        }
        self.settings = Some(Rc::new(Settings {
            header_name: config.header_name,
            header_value: config.header_value,
            keys: config.api_keys.into_iter().collect(),
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let settings = self.settings.clone()?;
        Some(Box::new(Request { settings }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    settings: Rc<Settings>,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        match self.get_http_request_header("x-api-key") {
            None => self.reject(401, "missing API key"),
            Some(key) if key.is_empty() => self.reject(401, "missing API key"),
            Some(key) if !self.settings.keys.contains(&key) => self.reject(403, "invalid API key"),
            Some(_) => {
                // The key is for the gateway, not the upstream.
                self.set_http_request_header("x-api-key", None);
                Action::Continue
            }
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let s = &self.settings;
        self.add_http_response_header(&s.header_name, &s.header_value);
        Action::Continue
    }
}

impl Request {
    fn reject(&self, status: u32, reason: &str) -> Action {
        let body = format!(r#"{{"error":"{reason}"}}"#);
        self.send_http_response(
            status,
            vec![
                ("content-type", "application/json"),
                ("www-authenticate", "ApiKey"),
            ],
            Some(body.as_bytes()),
        );
        Action::Pause
    }
}
