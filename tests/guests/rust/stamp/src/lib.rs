//! stamp: marks every response with the version it was built as (`x-filter-version: v1`, or
//! `v2` with the `v2` feature). The hot-reload tests swap one build for the other under load and
//! read which one answered.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

const VERSION: &str = if cfg!(feature = "v2") { "v2" } else { "v1" };

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Stamp) });
}}

struct Stamp;

impl Context for Stamp {}

impl RootContext for Stamp {
    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stamp))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl HttpContext for Stamp {
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.set_http_response_header("x-filter-version", Some(VERSION));
        Action::Continue
    }
}
