// api-key: rejects requests without a known API key and stamps a configured header on every
// response. The same filter exists in Rust and AssemblyScript beside this directory; all three
// behave identically.
package main

import (
	"bytes"
	"encoding/json"

	"rustygate.dev/sdk/go/proxywasm"
)

type config struct {
	HeaderName  string   `json:"header_name"`
	HeaderValue string   `json:"header_value"`
	APIKeys     []string `json:"api_keys"`
}

func init() {
	proxywasm.SetNewRootContext(func(uint32) proxywasm.RootContext { return &root{} })
}

// main never runs in a c-shared module; registration happens in init.
func main() {}

type root struct {
	proxywasm.DefaultRootContext
	cfg  config
	keys map[string]bool
}

func (r *root) OnPluginStart(int) bool {
	raw, err := proxywasm.GetPluginConfiguration()
	if err != nil || len(raw) == 0 {
		proxywasm.LogError("api-key: configuration is required")
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r.cfg); err != nil {
		proxywasm.LogError("api-key: invalid configuration: " + err.Error())
		return false
	}
	if r.cfg.HeaderName == "" {
		proxywasm.LogError("api-key: configuration: header_name is required")
		return false
	}
	if len(r.cfg.APIKeys) == 0 {
		proxywasm.LogError("api-key: configuration: api_keys must list at least one key")
		return false
	}
	r.keys = make(map[string]bool, len(r.cfg.APIKeys))
	for _, k := range r.cfg.APIKeys {
		r.keys[k] = true
	}
	return true
}

func (r *root) NewHttpContext(uint32) proxywasm.HttpContext { return &request{root: r} }

type request struct {
	proxywasm.DefaultHttpContext
	root *root
}

func (q *request) OnHttpRequestHeaders(int, bool) proxywasm.Action {
	key, err := proxywasm.GetHttpRequestHeader("x-api-key")
	switch {
	case err != nil || key == "":
		reject(401, "missing API key")
		return proxywasm.ActionPause
	case !q.root.keys[key]:
		reject(403, "invalid API key")
		return proxywasm.ActionPause
	}
	// The key is for the gateway, not the upstream.
	proxywasm.RemoveHttpRequestHeader("x-api-key")
	return proxywasm.ActionContinue
}

func (q *request) OnHttpResponseHeaders(int, bool) proxywasm.Action {
	proxywasm.AddHttpResponseHeader(q.root.cfg.HeaderName, q.root.cfg.HeaderValue)
	return proxywasm.ActionContinue
}

func reject(status uint32, reason string) {
	body := []byte(`{"error":"` + reason + `"}`)
	headers := [][2]string{{"content-type", "application/json"}, {"www-authenticate", "ApiKey"}}
	proxywasm.SendHttpResponse(status, headers, body, -1)
}
