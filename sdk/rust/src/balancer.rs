//! Load-balancing strategies: the `load-balancer` world of `wit/gateway`.
//!
//! The gateway keeps one instance per worker thread and cluster, calls
//! [`Balancer::set_endpoints`] with the endpoints in rotation whenever that set changes, asks
//! [`Balancer::pick`] per request and reports each attempt's outcome. A strategy never sees
//! an unhealthy endpoint (except in panic mode, flagged by `healthy: false`), and if it traps
//! or overruns its CPU budget the gateway serves the cluster with its own round-robin until a
//! fresh instance is up.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "load-balancer",
        path: "../../wit/gateway",
        pub_export_macro: true,
        export_macro_name: "__export_load_balancer",
        default_bindings_module: "rustygate_sdk::balancer::bindings",
    });
}

pub use bindings::exports::rustygate::gateway::balancer::{
    Endpoint, Needs, Outcome, RequestInfo, ResponseInfo,
};

/// A load-balancing strategy.
pub trait Balancer: Sized + 'static {
    /// Builds the strategy from the balancer's `configuration` (JSON text, `null` when
    /// absent). An error refuses the gateway configuration with this message.
    fn configure(config: &str) -> Result<Self, String>;

    /// What [`Balancer::pick`] reads from requests, and whether it wants outcomes reported.
    /// The gateway leaves the other request fields empty and skips reports it does not want.
    /// A strategy that needs nothing (round-robin, random) has its picks asked for in
    /// batches, which makes a pick nearly free. Everything by default.
    fn needs(&self) -> Needs {
        Needs::METHOD | Needs::PATH | Needs::HOST | Needs::HASH_KEY | Needs::OUTCOMES
    }

    /// The endpoints to choose among from now on, in configuration order.
    fn set_endpoints(&mut self, endpoints: Vec<Endpoint>);

    /// The `id` of the endpoint for this request; `None` lets the gateway choose.
    fn pick(&mut self, request: RequestInfo) -> Option<u32>;

    /// How an attempt to endpoint `id` ended. Ignored unless overridden.
    fn report(&mut self, id: u32, outcome: Outcome) {
        let _ = (id, outcome);
    }
}

/// Exports a [`Balancer`] implementation as the component's `balancer` interface. On other
/// targets than wasm32 it exports nothing, so the strategy's crate still builds and runs its
/// unit tests natively.
#[macro_export]
macro_rules! export_balancer {
    ($strategy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::balancer::bindings::exports::rustygate::gateway::balancer as __wit;

            ::std::thread_local! {
                static __STRATEGY: ::core::cell::RefCell<::core::option::Option<$strategy>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            fn __with<R>(f: impl FnOnce(&mut $strategy) -> R) -> ::core::option::Option<R> {
                __STRATEGY.with(|s| s.borrow_mut().as_mut().map(f))
            }

            struct __Export;

            impl __wit::Guest for __Export {
                fn configure(config: ::std::string::String) -> ::core::result::Result<__wit::Needs, ::std::string::String> {
                    // Panic messages go to the gateway's log: a component has no stderr.
                    ::std::panic::set_hook(::std::boxed::Box::new(|info| {
                        $crate::log::write($crate::log::Level::Error, &info.to_string());
                    }));
                    let strategy = <$strategy as $crate::balancer::Balancer>::configure(&config)?;
                    let needs = $crate::balancer::Balancer::needs(&strategy);
                    __STRATEGY.with(|s| *s.borrow_mut() = ::core::option::Option::Some(strategy));
                    ::core::result::Result::Ok(needs)
                }

                fn set_endpoints(endpoints: ::std::vec::Vec<__wit::Endpoint>) {
                    __with(|b| $crate::balancer::Balancer::set_endpoints(b, endpoints));
                }

                fn pick(request: __wit::RequestInfo) -> ::core::option::Option<u32> {
                    __with(|b| $crate::balancer::Balancer::pick(b, request)).flatten()
                }

                fn pick_ahead(count: u32) -> ::std::vec::Vec<u32> {
                    __with(|b| {
                        let mut picks = ::std::vec::Vec::with_capacity(count as usize);
                        for _ in 0..count {
                            let request = __wit::RequestInfo {
                                method: ::std::string::String::new(),
                                path: ::std::string::String::new(),
                                host: ::core::option::Option::None,
                                hash_key: ::core::option::Option::None,
                            };
                            match $crate::balancer::Balancer::pick(b, request) {
                                ::core::option::Option::Some(id) => picks.push(id),
                                ::core::option::Option::None => break,
                            }
                        }
                        picks
                    })
                    .unwrap_or_default()
                }

                fn report(id: u32, outcome: __wit::Outcome) {
                    __with(|b| $crate::balancer::Balancer::report(b, id, outcome));
                }
            }

            $crate::balancer::bindings::__export_load_balancer!(__Export with_types_in $crate::balancer::bindings);
        };
    };
}
