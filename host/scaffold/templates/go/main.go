// __NAME__: a proxy-wasm filter in Go (RustyGate's SDK, standard library only). It adds the
// header named in its configuration to every response. Runs in RustyGate and in Envoy.
package main

import (
	"bytes"
	"encoding/json"

	"rustygate.dev/sdk/go/proxywasm"
)

type config struct {
	HeaderName  string `json:"header_name"`
	HeaderValue string `json:"header_value"`
}

// Go's c-shared build runs init when the gateway loads the module; main never runs.
func init() {
	proxywasm.SetNewRootContext(func(uint32) proxywasm.RootContext { return &root{} })
}

func main() {}

type root struct {
	proxywasm.DefaultRootContext
	config config
}

// OnPluginStart runs when the gateway (re)loads the filter; false refuses the configuration.
func (r *root) OnPluginStart(int) bool {
	raw, err := proxywasm.GetPluginConfiguration()
	if err != nil {
		proxywasm.LogError("__NAME__: configuration is required")
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r.config); err != nil {
		proxywasm.LogError("__NAME__: invalid configuration: " + err.Error())
		return false
	}
	if r.config.HeaderName == "" {
		proxywasm.LogError("__NAME__: configuration: header_name is required")
		return false
	}
	return true
}

func (r *root) NewHttpContext(uint32) proxywasm.HttpContext { return &request{config: &r.config} }

type request struct {
	proxywasm.DefaultHttpContext
	config *config
}

func (q *request) OnHttpResponseHeaders(int, bool) proxywasm.Action {
	proxywasm.AddHttpResponseHeader(q.config.HeaderName, q.config.HeaderValue)
	return proxywasm.ActionContinue
}
