//go:build wasip1

package proxywasm

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"rustygate.dev/sdk/go/internal/wire"
)

// LogLevel is a proxy-wasm log level.
type LogLevel uint32

const (
	LogLevelTrace LogLevel = iota
	LogLevelDebug
	LogLevelInfo
	LogLevelWarn
	LogLevelError
	LogLevelCritical
)

// Log writes msg to the gateway's log at level, tagged with the filter's name.
func Log(level LogLevel, msg string) {
	proxyLog(uint32(level), strPtr(msg), uint32(len(msg)))
}

func LogTrace(msg string)    { Log(LogLevelTrace, msg) }
func LogDebug(msg string)    { Log(LogLevelDebug, msg) }
func LogInfo(msg string)     { Log(LogLevelInfo, msg) }
func LogWarn(msg string)     { Log(LogLevelWarn, msg) }
func LogError(msg string)    { Log(LogLevelError, msg) }
func LogCritical(msg string) { Log(LogLevelCritical, msg) }

// LogInfof formats with fmt; the other levels have no f-variants to keep fmt out of
// filters that do not want it.
func LogInfof(format string, args ...any) { Log(LogLevelInfo, fmt.Sprintf(format, args...)) }

// GetLogLevel is the gateway's current level: skip building messages it would drop.
func GetLogLevel() (LogLevel, error) {
	var level uint32
	err := statusErr(proxyGetLogLevel(unsafe.Pointer(&level)))
	return LogLevel(level), err
}

// Buffer kinds (proxy_buffer_type_t).
const (
	bufferHTTPRequestBody      = 0
	bufferHTTPResponseBody     = 1
	bufferHTTPCallResponseBody = 4
	bufferVMConfiguration      = 6
	bufferPluginConfiguration  = 7
)

// Map kinds (proxy_map_type_t).
const (
	mapHTTPRequestHeaders      = 0
	mapHTTPRequestTrailers     = 1
	mapHTTPResponseHeaders     = 2
	mapHTTPResponseTrailers    = 3
	mapHTTPCallResponseHeaders = 6
	mapHTTPCallResponseTrailer = 7
)

// The largest size a get asks for: the host clamps to what exists.
const wholeBuffer = 0x7fffffff

func getBuffer(kind uint32, start, size int) ([]byte, error) {
	var p, n uint32
	if err := statusErr(proxyGetBufferBytes(kind, uint32(start), uint32(size), unsafe.Pointer(&p), unsafe.Pointer(&n))); err != nil {
		return nil, err
	}
	return take(p, n), nil
}

func setBuffer(kind uint32, start, size int, data []byte) error {
	return statusErr(proxySetBufferBytes(kind, uint32(start), uint32(size), ptr(data), uint32(len(data))))
}

// GetPluginConfiguration is the filter's configuration (the route's override if it has one),
// readable in OnPluginStart. YAML configuration arrives as JSON.
func GetPluginConfiguration() ([]byte, error) {
	return getBuffer(bufferPluginConfiguration, 0, wholeBuffer)
}

// GetVMConfiguration is the filter's vm_configuration.
func GetVMConfiguration() ([]byte, error) { return getBuffer(bufferVMConfiguration, 0, wholeBuffer) }

func getMap(kind uint32) ([][2]string, error) {
	var p, n uint32
	if err := statusErr(proxyGetHeaderMapPairs(kind, unsafe.Pointer(&p), unsafe.Pointer(&n))); err != nil {
		return nil, err
	}
	return wire.DecodeMap(take(p, n))
}

func setMap(kind uint32, pairs [][2]string) error {
	b := wire.EncodeMap(pairs)
	return statusErr(proxySetHeaderMapPairs(kind, ptr(b), uint32(len(b))))
}

func getMapValue(kind uint32, key string) (string, error) {
	var p, n uint32
	if err := statusErr(proxyGetHeaderMapValue(kind, strPtr(key), uint32(len(key)), unsafe.Pointer(&p), unsafe.Pointer(&n))); err != nil {
		return "", err
	}
	return string(take(p, n)), nil
}

func addMapValue(kind uint32, key, value string) error {
	return statusErr(proxyAddHeaderMapValue(kind, strPtr(key), uint32(len(key)), strPtr(value), uint32(len(value))))
}

func replaceMapValue(kind uint32, key, value string) error {
	return statusErr(proxyReplaceHeaderMapValue(kind, strPtr(key), uint32(len(key)), strPtr(value), uint32(len(value))))
}

func removeMapValue(kind uint32, key string) error {
	return statusErr(proxyRemoveHeaderMapValue(kind, strPtr(key), uint32(len(key))))
}

// Request headers, including the pseudo-headers :method, :path, :authority and :scheme.
// Names are lower-case; lookups ignore case. A missing header is ErrNotFound.

func GetHttpRequestHeaders() ([][2]string, error)     { return getMap(mapHTTPRequestHeaders) }
func ReplaceHttpRequestHeaders(h [][2]string) error   { return setMap(mapHTTPRequestHeaders, h) }
func GetHttpRequestHeader(key string) (string, error) { return getMapValue(mapHTTPRequestHeaders, key) }
func AddHttpRequestHeader(key, value string) error {
	return addMapValue(mapHTTPRequestHeaders, key, value)
}
func ReplaceHttpRequestHeader(key, value string) error {
	return replaceMapValue(mapHTTPRequestHeaders, key, value)
}
func RemoveHttpRequestHeader(key string) error       { return removeMapValue(mapHTTPRequestHeaders, key) }
func GetHttpRequestTrailers() ([][2]string, error)   { return getMap(mapHTTPRequestTrailers) }
func ReplaceHttpRequestTrailers(t [][2]string) error { return setMap(mapHTTPRequestTrailers, t) }
func AddHttpRequestTrailer(key, value string) error {
	return addMapValue(mapHTTPRequestTrailers, key, value)
}
func GetHttpResponseHeaders() ([][2]string, error)   { return getMap(mapHTTPResponseHeaders) }
func ReplaceHttpResponseHeaders(h [][2]string) error { return setMap(mapHTTPResponseHeaders, h) }
func GetHttpResponseHeader(key string) (string, error) {
	return getMapValue(mapHTTPResponseHeaders, key)
}
func AddHttpResponseHeader(key, value string) error {
	return addMapValue(mapHTTPResponseHeaders, key, value)
}
func ReplaceHttpResponseHeader(key, value string) error {
	return replaceMapValue(mapHTTPResponseHeaders, key, value)
}
func RemoveHttpResponseHeader(key string) error     { return removeMapValue(mapHTTPResponseHeaders, key) }
func GetHttpResponseTrailers() ([][2]string, error) { return getMap(mapHTTPResponseTrailers) }
func AddHttpResponseTrailer(key, value string) error {
	return addMapValue(mapHTTPResponseTrailers, key, value)
}

// Bodies: readable in the body callbacks (everything received so far while paused).
// Replace, append and prepend use the host's (start, size) conventions.

func GetHttpRequestBody(start, size int) ([]byte, error) {
	return getBuffer(bufferHTTPRequestBody, start, size)
}
func ReplaceHttpRequestBody(b []byte) error {
	return setBuffer(bufferHTTPRequestBody, 0, wholeBuffer, b)
}
func AppendHttpRequestBody(b []byte) error {
	return setBuffer(bufferHTTPRequestBody, wholeBuffer, 0, b)
}
func PrependHttpRequestBody(b []byte) error { return setBuffer(bufferHTTPRequestBody, 0, 0, b) }
func GetHttpResponseBody(start, size int) ([]byte, error) {
	return getBuffer(bufferHTTPResponseBody, start, size)
}
func ReplaceHttpResponseBody(b []byte) error {
	return setBuffer(bufferHTTPResponseBody, 0, wholeBuffer, b)
}
func AppendHttpResponseBody(b []byte) error {
	return setBuffer(bufferHTTPResponseBody, wholeBuffer, 0, b)
}
func PrependHttpResponseBody(b []byte) error { return setBuffer(bufferHTTPResponseBody, 0, 0, b) }

// ResumeHttpRequest continues a request paused with ActionPause. It takes effect when the
// current callback returns.
func ResumeHttpRequest() error { return statusErr(proxyContinueStream(0)) }

// ResumeHttpResponse continues a paused response.
func ResumeHttpResponse() error { return statusErr(proxyContinueStream(1)) }

// SendHttpResponse answers the request from the filter; the upstream is not called (or its
// response is replaced). The answer still passes this filter's response callbacks. Pass
// grpcStatus -1 for a plain HTTP answer.
func SendHttpResponse(status uint32, headers [][2]string, body []byte, grpcStatus int32) error {
	const details = "wasm_local_response"
	h := wire.EncodeMap(headers)
	return statusErr(proxySendLocalResponse(status, strPtr(details), uint32(len(details)),
		ptr(body), uint32(len(body)), ptr(h), uint32(len(h)), grpcStatus))
}

// DispatchHttpCall sends a request to the configured cluster `cluster`; headers must
// include :method, :path and :authority. When the answer comes (or the call fails, with
// numHeaders 0), callback runs with the calling context current, so a paused request can
// be resumed or answered from it. timeoutMs 0 means no timeout.
func DispatchHttpCall(cluster string, headers [][2]string, body []byte, trailers [][2]string,
	timeoutMs uint32, callback func(numHeaders, bodySize, numTrailers int)) (uint32, error) {
	h, t := wire.EncodeMap(headers), wire.EncodeMap(trailers)
	var token uint32
	err := statusErr(proxyHTTPCall(strPtr(cluster), uint32(len(cluster)), ptr(h), uint32(len(h)),
		ptr(body), uint32(len(body)), ptr(t), uint32(len(t)), timeoutMs, unsafe.Pointer(&token)))
	if err != nil {
		return 0, err
	}
	root := currentContextID
	if s, ok := streams[currentContextID]; ok {
		root = s.rootID
	}
	roots[root].callouts[token] = callout{contextID: currentContextID, fn: callback}
	return token, nil
}

// Inside a DispatchHttpCall callback: the answer's headers (with :status), body and trailers.

func GetHttpCallResponseHeaders() ([][2]string, error) { return getMap(mapHTTPCallResponseHeaders) }
func GetHttpCallResponseHeader(key string) (string, error) {
	return getMapValue(mapHTTPCallResponseHeaders, key)
}
func GetHttpCallResponseBody(start, size int) ([]byte, error) {
	return getBuffer(bufferHTTPCallResponseBody, start, size)
}
func GetHttpCallResponseTrailers() ([][2]string, error) { return getMap(mapHTTPCallResponseTrailer) }

// GetProperty reads a request or filter attribute, e.g. {"request", "path"} or
// {"source", "address"}. Values are raw bytes; numbers are 8-byte little-endian.
func GetProperty(path []string) ([]byte, error) {
	b := wire.EncodePath(path)
	var p, n uint32
	if err := statusErr(proxyGetProperty(ptr(b), uint32(len(b)), unsafe.Pointer(&p), unsafe.Pointer(&n))); err != nil {
		return nil, err
	}
	return take(p, n), nil
}

// SetProperty stores a value a later GetProperty in the same request reads back.
func SetProperty(path []string, value []byte) error {
	b := wire.EncodePath(path)
	return statusErr(proxySetProperty(ptr(b), uint32(len(b)), ptr(value), uint32(len(value))))
}

// GetSharedData reads a key shared by every VM with the same vm_id, across all workers,
// and the compare-and-swap token to pass to SetSharedData.
func GetSharedData(key string) (value []byte, cas uint32, err error) {
	var p, n uint32
	err = statusErr(proxyGetSharedData(strPtr(key), uint32(len(key)), unsafe.Pointer(&p), unsafe.Pointer(&n), unsafe.Pointer(&cas)))
	if err != nil {
		return nil, 0, err
	}
	return take(p, n), cas, nil
}

// SetSharedData writes key. With cas != 0 it fails with ErrCasMismatch when another writer
// changed the key since the GetSharedData that returned cas; retry from the read.
func SetSharedData(key string, value []byte, cas uint32) error {
	return statusErr(proxySetSharedData(strPtr(key), uint32(len(key)), ptr(value), uint32(len(value)), cas))
}

// RegisterSharedQueue creates (or takes over) the queue `name` in this VM's vm_id; this root
// context's OnQueueReady then runs when items arrive.
func RegisterSharedQueue(name string) (uint32, error) {
	var id uint32
	err := statusErr(proxyRegisterSharedQueue(strPtr(name), uint32(len(name)), unsafe.Pointer(&id)))
	return id, err
}

// ResolveSharedQueue finds a queue registered by a VM with vmID ("" = this VM's).
func ResolveSharedQueue(vmID, name string) (uint32, error) {
	var id uint32
	err := statusErr(proxyResolveSharedQueue(strPtr(vmID), uint32(len(vmID)), strPtr(name), uint32(len(name)), unsafe.Pointer(&id)))
	return id, err
}

func EnqueueSharedQueue(queueID uint32, data []byte) error {
	return statusErr(proxyEnqueueSharedQueue(queueID, ptr(data), uint32(len(data))))
}

// DequeueSharedQueue returns ErrEmpty when nothing is queued.
func DequeueSharedQueue(queueID uint32) ([]byte, error) {
	var p, n uint32
	if err := statusErr(proxyDequeueSharedQueue(queueID, unsafe.Pointer(&p), unsafe.Pointer(&n))); err != nil {
		return nil, err
	}
	return take(p, n), nil
}

// SetTickPeriodMilliSeconds arms the root context's timer (0 stops it). Each worker's VM
// ticks on its own.
func SetTickPeriodMilliSeconds(ms uint32) error {
	return statusErr(proxySetTickPeriodMilliseconds(ms))
}

// PluginDone completes a retirement deferred by OnPluginDone returning false.
func PluginDone() error { return statusErr(proxyDone()) }

// CallForeignFunction calls a host extension by name (RustyGate offers e.g. the rate limiter
// used by filters/rate-limit; Envoy offers compress/uncompress).
func CallForeignFunction(name string, args []byte) ([]byte, error) {
	var p, n uint32
	if err := statusErr(proxyCallForeignFunction(strPtr(name), uint32(len(name)), ptr(args), uint32(len(args)), unsafe.Pointer(&p), unsafe.Pointer(&n))); err != nil {
		return nil, err
	}
	return take(p, n), nil
}

// Metrics are exported on the admin /metrics as rustygate_filter_<name>{filter="..."}.

type MetricCounter uint32
type MetricGauge uint32
type MetricHistogram uint32

func defineMetric(kind uint32, name string) uint32 {
	var id uint32
	if err := statusErr(proxyDefineMetric(kind, strPtr(name), uint32(len(name)), unsafe.Pointer(&id))); err != nil {
		panic("proxywasm: defining metric " + name + ": " + err.Error())
	}
	return id
}

func DefineCounterMetric(name string) MetricCounter { return MetricCounter(defineMetric(0, name)) }
func DefineGaugeMetric(name string) MetricGauge     { return MetricGauge(defineMetric(1, name)) }
func DefineHistogramMetric(name string) MetricHistogram {
	return MetricHistogram(defineMetric(2, name))
}

func (c MetricCounter) Increment(delta uint64) { proxyIncrementMetric(uint32(c), int64(delta)) }
func (c MetricCounter) Value() uint64          { return getMetric(uint32(c)) }
func (g MetricGauge) Add(delta int64)          { proxyIncrementMetric(uint32(g), delta) }
func (g MetricGauge) Set(value uint64)         { proxyRecordMetric(uint32(g), value) }
func (g MetricGauge) Value() uint64            { return getMetric(uint32(g)) }
func (h MetricHistogram) Record(value uint64)  { proxyRecordMetric(uint32(h), value) }

func getMetric(id uint32) uint64 {
	var v uint64
	proxyGetMetric(id, unsafe.Pointer(&v))
	return v
}

// U64 decodes a numeric property value (8 bytes, little-endian).
func U64(b []byte) (uint64, bool) {
	if len(b) != 8 {
		return 0, false
	}
	return binary.LittleEndian.Uint64(b), true
}
