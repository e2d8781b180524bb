//! __NAME__: a RustyGate component filter (the typed `http-filter` world, sdk/rust). It adds
//! the header named in its configuration to every response.

use std::rc::Rc;

use rustygate_sdk::filter::{Action, HttpFilter, Request, Response};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    header_name: String,
    header_value: String,
}

/// One request's state; the configuration is shared by every request of an instance.
pub struct Filter {
    config: Rc<Config>,
}

impl HttpFilter for Filter {
    type Config = Config;

    // Runs when the gateway (re)loads the filter; an error refuses the configuration.
    fn configure(config: &str) -> Result<Config, String> {
        serde_json::from_str(config).map_err(|e| format!("invalid configuration: {e}"))
    }

    fn new(config: Rc<Config>) -> Self {
        Filter { config }
    }

    fn on_response_headers(
        &mut self,
        _request: &Request,
        response: &Response,
        _eos: bool,
    ) -> Action {
        // Names and values are checked by the gateway: a bad one is refused, not sent.
        let _ = response.add_header(&self.config.header_name, &self.config.header_value);
        Action::Continue
    }
}

rustygate_sdk::export_http_filter!(Filter);
