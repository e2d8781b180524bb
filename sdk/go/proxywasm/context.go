//go:build wasip1

package proxywasm

// Action tells the host what to do after a stream callback.
type Action uint32

const (
	// ActionContinue passes the headers or body on to the next filter.
	ActionContinue Action = 0
	// ActionPause holds the stream until ResumeHttpRequest / ResumeHttpResponse or a local
	// response. Paused in a body callback, the host buffers: the next body callback sees all
	// the bytes so far.
	ActionPause Action = 1
)

// RootContext is a filter's plugin-wide state: one per filter instance in each worker's VM.
// It reads the configuration, owns timers and queues, and makes an HttpContext per request.
// Embed DefaultRootContext to implement only what you need.
type RootContext interface {
	// OnVMStart runs once per root context with the VM configuration's size.
	// Returning false marks the filter as failed.
	OnVMStart(vmConfigurationSize int) bool
	// OnPluginStart runs with the filter's configuration readable through
	// GetPluginConfiguration. Returning false rejects the configuration.
	OnPluginStart(pluginConfigurationSize int) bool
	// NewHttpContext makes the per-request state. Returning nil lets requests pass untouched.
	NewHttpContext(contextID uint32) HttpContext
	// OnTick runs every period set with SetTickPeriodMilliSeconds.
	OnTick()
	// OnQueueReady runs when an item was enqueued on a queue this context registered.
	OnQueueReady(queueID uint32)
	// OnPluginDone runs when the host retires the filter. Returning false defers the
	// retirement until the filter calls PluginDone.
	OnPluginDone() bool
}

// HttpContext is one request's state. Its callbacks run in the order the request flows:
// request headers, body, trailers; response headers, body, trailers; then OnHttpStreamDone.
// Embed DefaultHttpContext to implement only what you need.
type HttpContext interface {
	OnHttpRequestHeaders(numHeaders int, endOfStream bool) Action
	OnHttpRequestBody(bodySize int, endOfStream bool) Action
	OnHttpRequestTrailers(numTrailers int) Action
	OnHttpResponseHeaders(numHeaders int, endOfStream bool) Action
	OnHttpResponseBody(bodySize int, endOfStream bool) Action
	OnHttpResponseTrailers(numTrailers int) Action
	// OnHttpStreamDone runs once the response has been sent (Envoy's on_log): headers of
	// both directions are still readable.
	OnHttpStreamDone()
}

// DefaultRootContext accepts any configuration and makes no HTTP contexts.
type DefaultRootContext struct{}

func (DefaultRootContext) OnVMStart(int) bool                { return true }
func (DefaultRootContext) OnPluginStart(int) bool            { return true }
func (DefaultRootContext) NewHttpContext(uint32) HttpContext { return nil }
func (DefaultRootContext) OnTick()                           {}
func (DefaultRootContext) OnQueueReady(uint32)               {}
func (DefaultRootContext) OnPluginDone() bool                { return true }

// DefaultHttpContext continues every phase.
type DefaultHttpContext struct{}

func (DefaultHttpContext) OnHttpRequestHeaders(int, bool) Action  { return ActionContinue }
func (DefaultHttpContext) OnHttpRequestBody(int, bool) Action     { return ActionContinue }
func (DefaultHttpContext) OnHttpRequestTrailers(int) Action       { return ActionContinue }
func (DefaultHttpContext) OnHttpResponseHeaders(int, bool) Action { return ActionContinue }
func (DefaultHttpContext) OnHttpResponseBody(int, bool) Action    { return ActionContinue }
func (DefaultHttpContext) OnHttpResponseTrailers(int) Action      { return ActionContinue }
func (DefaultHttpContext) OnHttpStreamDone()                      {}

// SetNewRootContext registers the factory for root contexts. Call it from an init function:
// Go's c-shared build runs package initialisation when the host calls _initialize, and never
// runs main.
func SetNewRootContext(f func(contextID uint32) RootContext) {
	newRootContext = f
}
