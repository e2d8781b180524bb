//go:build wasip1

package proxywasm

// The callbacks the host calls, turned into calls on the filter's contexts. A VM runs one
// callback at a time, so plain maps suffice.

type rootState struct {
	ctx RootContext
	// Outstanding HTTP calls: token -> the context that made it and what to run.
	callouts map[uint32]callout
	// Open gRPC calls and streams, likewise.
	grpc map[uint32]grpcCallout
}

type callout struct {
	contextID uint32
	fn        func(numHeaders, bodySize, numTrailers int)
}

type httpState struct {
	ctx    HttpContext
	rootID uint32
}

var (
	newRootContext func(uint32) RootContext
	roots          = map[uint32]*rootState{}
	streams        = map[uint32]*httpState{}
	// The context whose callback is running; host calls made now act on it.
	currentContextID uint32
)

//go:wasmexport proxy_abi_version_0_2_1
func proxyABIVersion0_2_1() {}

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(contextID, parentID uint32) {
	currentContextID = contextID
	if parentID == 0 {
		if newRootContext == nil {
			panic("proxywasm: no root context registered; call proxywasm.SetNewRootContext from init()")
		}
		roots[contextID] = &rootState{ctx: newRootContext(contextID), callouts: map[uint32]callout{},
			grpc: map[uint32]grpcCallout{}}
		return
	}
	root, ok := roots[parentID]
	if !ok {
		panic("proxywasm: stream created under an unknown root context")
	}
	streams[contextID] = &httpState{ctx: root.ctx.NewHttpContext(contextID), rootID: parentID}
}

//go:wasmexport proxy_on_vm_start
func proxyOnVMStart(rootID, size uint32) uint32 {
	currentContextID = rootID
	return boolU32(root(rootID).ctx.OnVMStart(int(size)))
}

//go:wasmexport proxy_on_configure
func proxyOnConfigure(rootID, size uint32) uint32 {
	currentContextID = rootID
	return boolU32(root(rootID).ctx.OnPluginStart(int(size)))
}

//go:wasmexport proxy_on_tick
func proxyOnTick(rootID uint32) {
	currentContextID = rootID
	root(rootID).ctx.OnTick()
}

//go:wasmexport proxy_on_queue_ready
func proxyOnQueueReady(rootID, queueID uint32) {
	currentContextID = rootID
	root(rootID).ctx.OnQueueReady(queueID)
}

//go:wasmexport proxy_on_request_headers
func proxyOnRequestHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	h := stream(contextID)
	if h == nil {
		return uint32(ActionContinue)
	}
	return uint32(h.OnHttpRequestHeaders(int(numHeaders), endOfStream != 0))
}

//go:wasmexport proxy_on_request_body
func proxyOnRequestBody(contextID, bodySize, endOfStream uint32) uint32 {
	h := stream(contextID)
	if h == nil {
		return uint32(ActionContinue)
	}
	return uint32(h.OnHttpRequestBody(int(bodySize), endOfStream != 0))
}

//go:wasmexport proxy_on_request_trailers
func proxyOnRequestTrailers(contextID, numTrailers uint32) uint32 {
	h := stream(contextID)
	if h == nil {
		return uint32(ActionContinue)
	}
	return uint32(h.OnHttpRequestTrailers(int(numTrailers)))
}

//go:wasmexport proxy_on_response_headers
func proxyOnResponseHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	h := stream(contextID)
	if h == nil {
		return uint32(ActionContinue)
	}
	return uint32(h.OnHttpResponseHeaders(int(numHeaders), endOfStream != 0))
}

//go:wasmexport proxy_on_response_body
func proxyOnResponseBody(contextID, bodySize, endOfStream uint32) uint32 {
	h := stream(contextID)
	if h == nil {
		return uint32(ActionContinue)
	}
	return uint32(h.OnHttpResponseBody(int(bodySize), endOfStream != 0))
}

//go:wasmexport proxy_on_response_trailers
func proxyOnResponseTrailers(contextID, numTrailers uint32) uint32 {
	h := stream(contextID)
	if h == nil {
		return uint32(ActionContinue)
	}
	return uint32(h.OnHttpResponseTrailers(int(numTrailers)))
}

// The call belongs to the root context (the first argument, as in Envoy); the SDK switches
// the host to the context that made the call before running its callback.
//
//go:wasmexport proxy_on_http_call_response
func proxyOnHTTPCallResponse(rootID, token, numHeaders, bodySize, numTrailers uint32) {
	r := root(rootID)
	c, ok := r.callouts[token]
	if !ok {
		panic("proxywasm: response for an unknown http call")
	}
	delete(r.callouts, token)
	if enterCallout(rootID, c.contextID) {
		c.fn(int(numHeaders), int(bodySize), int(numTrailers))
	}
}

// enterCallout makes the context that made a call current for its callback; false when
// that context is a request that has ended since.
func enterCallout(rootID, contextID uint32) bool {
	currentContextID = contextID
	if contextID == rootID {
		return true
	}
	if _, live := streams[contextID]; !live {
		return false
	}
	return statusErr(proxySetEffectiveContext(contextID)) == nil
}

//go:wasmexport proxy_on_log
func proxyOnLog(contextID uint32) {
	if h := stream(contextID); h != nil {
		h.OnHttpStreamDone()
	}
}

//go:wasmexport proxy_on_done
func proxyOnDone(contextID uint32) uint32 {
	currentContextID = contextID
	if r, ok := roots[contextID]; ok {
		return boolU32(r.ctx.OnPluginDone())
	}
	return 1
}

//go:wasmexport proxy_on_delete
func proxyOnDelete(contextID uint32) {
	delete(streams, contextID)
	delete(roots, contextID)
}

func root(id uint32) *rootState {
	r, ok := roots[id]
	if !ok {
		panic("proxywasm: unknown root context")
	}
	return r
}

// stream makes id the current context and returns its HttpContext (nil if the filter made
// none for this request).
func stream(id uint32) HttpContext {
	currentContextID = id
	s, ok := streams[id]
	if !ok {
		panic("proxywasm: unknown stream context")
	}
	return s.ctx
}

func boolU32(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}
