// go-probe: a proxy-wasm test filter in plain Go (GOOS=wasip1, -buildmode=c-shared), built
// from source by the test build. It speaks ABI 0.2.0, as the Go SDK does.
package main

import (
	"encoding/json"
	"strconv"
	"strings"
)

type config struct {
	// Tag added to requests as x-go-tag.
	Tag string `json:"tag"`
	// Requests to this path get a local 418.
	DenyPath string `json:"deny_path"`
	// Buffer the request body and upper-case it.
	UpperBody bool `json:"upper_body"`
	// Count requests in this filter-defined counter.
	Counter string `json:"counter"`
}

type stream struct {
	hits uint64
}

var (
	cfg       config
	counterID uint32
	streams   = map[uint32]*stream{}
)

//go:wasmexport proxy_abi_version_0_2_0
func abiVersion() {}

//go:wasmexport proxy_on_context_create
func onContextCreate(ctx, root uint32) {
	if root != 0 {
		streams[ctx] = &stream{}
	}
}

//go:wasmexport proxy_on_vm_start
func onVMStart(root, size uint32) uint32 { return 1 }

//go:wasmexport proxy_on_configure
func onConfigure(root, size uint32) uint32 {
	raw := bufferBytes(bufferPluginConfiguration, 0, size)
	if len(raw) == 0 {
		return 1
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		logf("go-probe: invalid configuration: " + err.Error())
		return 0
	}
	if cfg.Counter != "" {
		counterID = defineCounter(cfg.Counter)
	}
	return 1
}

//go:wasmexport proxy_on_request_headers
func onRequestHeaders(ctx, headers, eos uint32) uint32 {
	path, _ := header(mapRequestHeaders, ":path")
	logf("go-probe saw " + path)
	if cfg.DenyPath != "" && path == cfg.DenyPath {
		sendLocalResponse(418, "go says no\n", [][2]string{{"x-go-denied", "yes"}})
		return 1
	}
	s := streams[ctx]
	s.hits = sharedAdd("go_hits")
	if counterID != 0 {
		proxyIncrementMetric(counterID, 1)
	}
	addHeader(mapRequestHeaders, "x-go-tag", cfg.Tag)
	replaceHeader(mapRequestHeaders, "user-agent", "go-probe")
	removeHeader(mapRequestHeaders, "x-remove-me")
	return 0
}

//go:wasmexport proxy_on_request_body
func onRequestBody(ctx, size, eos uint32) uint32 {
	if !cfg.UpperBody {
		return 0
	}
	if eos == 0 {
		return 1 // keep buffering: the next call sees everything so far
	}
	upper := []byte(strings.ToUpper(string(bufferBytes(bufferRequestBody, 0, size))))
	proxySetBufferBytes(bufferRequestBody, 0, size, ptrOf(upper), uint32(len(upper)))
	return 0
}

//go:wasmexport proxy_on_response_headers
func onResponseHeaders(ctx, headers, eos uint32) uint32 {
	s := streams[ctx]
	if s != nil && s.hits > 0 {
		addHeader(mapResponseHeaders, "x-go-hits", strconv.FormatUint(s.hits, 10))
	}
	addHeader(mapResponseHeaders, "x-go-plugin", property("plugin_name"))
	addHeader(mapResponseHeaders, "x-go-response-headers", strconv.Itoa(headerCount(mapResponseHeaders)))
	return 0
}

//go:wasmexport proxy_on_log
func onLog(ctx uint32) {}

//go:wasmexport proxy_on_done
func onDone(ctx uint32) uint32 { return 1 }

//go:wasmexport proxy_on_delete
func onDelete(ctx uint32) { delete(streams, ctx) }

func main() {}
