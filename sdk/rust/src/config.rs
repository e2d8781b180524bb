//! A component's `configuration`, as `configure` receives it: JSON text, `null` when the
//! gateway configuration has none. Errors are worded for the gateway's log, which prefixes
//! them with the balancer's name.

/// `T` from the configuration, or `T::default()` when there is none.
#[cfg(feature = "serde")]
pub fn parse<T: serde::de::DeserializeOwned + Default>(text: &str) -> Result<T, String> {
    match text.trim() {
        "null" => Ok(T::default()),
        text => serde_json::from_str(text).map_err(|e| format!("configuration: {e}")),
    }
}

/// Accepts only no configuration (or an empty map), for strategies without settings.
pub fn none(strategy: &str, text: &str) -> Result<(), String> {
    match text.trim() {
        "null" | "{}" => Ok(()),
        other => Err(format!("{strategy} takes no configuration, got {other}")),
    }
}
