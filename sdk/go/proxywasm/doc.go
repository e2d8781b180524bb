// Package proxywasm is RustyGate's Go SDK for proxy-wasm filters: stock Go ≥ 1.24,
// standard library only, ABI 0.2.1. A filter built with it runs in RustyGate and in Envoy.
//
// A filter registers a RootContext factory from init(), answers per-request callbacks on
// the HttpContext its root makes, and calls package functions (GetHttpRequestHeader,
// SendHttpResponse, DispatchHttpCall, ...) that act on the context whose callback is
// running. Build it with:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o filter.wasm .
//
// See docs/filters/go.md in the RustyGate repository.
package proxywasm
