//go:build wasip1

package proxywasm

import "unsafe"

// The proxy-wasm host functions (module "env"), declared with the parameter types the ABI
// defines: every size and pointer is a 32-bit unsigned value. Go links only what is used, so
// a filter imports no more than it calls (the host refuses unknown imports at load).

//go:wasmimport env proxy_log
func proxyLog(level uint32, msg unsafe.Pointer, msgLen uint32) uint32

//go:wasmimport env proxy_get_log_level
func proxyGetLogLevel(retLevel unsafe.Pointer) uint32

//go:wasmimport env proxy_set_tick_period_milliseconds
func proxySetTickPeriodMilliseconds(period uint32) uint32

//go:wasmimport env proxy_set_effective_context
func proxySetEffectiveContext(contextID uint32) uint32

//go:wasmimport env proxy_done
func proxyDone() uint32

//go:wasmimport env proxy_get_property
func proxyGetProperty(path unsafe.Pointer, pathLen uint32, retPtr, retLen unsafe.Pointer) uint32

//go:wasmimport env proxy_set_property
func proxySetProperty(path unsafe.Pointer, pathLen uint32, value unsafe.Pointer, valueLen uint32) uint32

//go:wasmimport env proxy_get_header_map_pairs
func proxyGetHeaderMapPairs(kind uint32, retPtr, retLen unsafe.Pointer) uint32

//go:wasmimport env proxy_set_header_map_pairs
func proxySetHeaderMapPairs(kind uint32, data unsafe.Pointer, dataLen uint32) uint32

//go:wasmimport env proxy_get_header_map_value
func proxyGetHeaderMapValue(kind uint32, key unsafe.Pointer, keyLen uint32, retPtr, retLen unsafe.Pointer) uint32

//go:wasmimport env proxy_add_header_map_value
func proxyAddHeaderMapValue(kind uint32, key unsafe.Pointer, keyLen uint32, value unsafe.Pointer, valueLen uint32) uint32

//go:wasmimport env proxy_replace_header_map_value
func proxyReplaceHeaderMapValue(kind uint32, key unsafe.Pointer, keyLen uint32, value unsafe.Pointer, valueLen uint32) uint32

//go:wasmimport env proxy_remove_header_map_value
func proxyRemoveHeaderMapValue(kind uint32, key unsafe.Pointer, keyLen uint32) uint32

//go:wasmimport env proxy_get_buffer_bytes
func proxyGetBufferBytes(kind, start, maxSize uint32, retPtr, retLen unsafe.Pointer) uint32

//go:wasmimport env proxy_set_buffer_bytes
func proxySetBufferBytes(kind, start, size uint32, data unsafe.Pointer, dataLen uint32) uint32

//go:wasmimport env proxy_continue_stream
func proxyContinueStream(streamType uint32) uint32

//go:wasmimport env proxy_close_stream
func proxyCloseStream(streamType uint32) uint32

//go:wasmimport env proxy_send_local_response
func proxySendLocalResponse(status uint32, details unsafe.Pointer, detailsLen uint32, body unsafe.Pointer, bodyLen uint32, headers unsafe.Pointer, headersLen uint32, grpcStatus int32) uint32

//go:wasmimport env proxy_http_call
func proxyHTTPCall(upstream unsafe.Pointer, upstreamLen uint32, headers unsafe.Pointer, headersLen uint32, body unsafe.Pointer, bodyLen uint32, trailers unsafe.Pointer, trailersLen uint32, timeoutMs uint32, retToken unsafe.Pointer) uint32

//go:wasmimport env proxy_get_shared_data
func proxyGetSharedData(key unsafe.Pointer, keyLen uint32, retPtr, retLen, retCas unsafe.Pointer) uint32

//go:wasmimport env proxy_set_shared_data
func proxySetSharedData(key unsafe.Pointer, keyLen uint32, value unsafe.Pointer, valueLen uint32, cas uint32) uint32

//go:wasmimport env proxy_register_shared_queue
func proxyRegisterSharedQueue(name unsafe.Pointer, nameLen uint32, retID unsafe.Pointer) uint32

//go:wasmimport env proxy_resolve_shared_queue
func proxyResolveSharedQueue(vmID unsafe.Pointer, vmIDLen uint32, name unsafe.Pointer, nameLen uint32, retID unsafe.Pointer) uint32

//go:wasmimport env proxy_enqueue_shared_queue
func proxyEnqueueSharedQueue(id uint32, value unsafe.Pointer, valueLen uint32) uint32

//go:wasmimport env proxy_dequeue_shared_queue
func proxyDequeueSharedQueue(id uint32, retPtr, retLen unsafe.Pointer) uint32

//go:wasmimport env proxy_define_metric
func proxyDefineMetric(kind uint32, name unsafe.Pointer, nameLen uint32, retID unsafe.Pointer) uint32

//go:wasmimport env proxy_increment_metric
func proxyIncrementMetric(id uint32, delta int64) uint32

//go:wasmimport env proxy_record_metric
func proxyRecordMetric(id uint32, value uint64) uint32

//go:wasmimport env proxy_get_metric
func proxyGetMetric(id uint32, retValue unsafe.Pointer) uint32

//go:wasmimport env proxy_call_foreign_function
func proxyCallForeignFunction(name unsafe.Pointer, nameLen uint32, args unsafe.Pointer, argsLen uint32, retPtr, retLen unsafe.Pointer) uint32

//go:wasmimport env proxy_grpc_call
func proxyGrpcCall(upstream unsafe.Pointer, upstreamLen uint32, service unsafe.Pointer, serviceLen uint32, method unsafe.Pointer, methodLen uint32, metadata unsafe.Pointer, metadataLen uint32, message unsafe.Pointer, messageLen uint32, timeoutMs uint32, retToken unsafe.Pointer) uint32

//go:wasmimport env proxy_grpc_stream
func proxyGrpcStream(upstream unsafe.Pointer, upstreamLen uint32, service unsafe.Pointer, serviceLen uint32, method unsafe.Pointer, methodLen uint32, metadata unsafe.Pointer, metadataLen uint32, retToken unsafe.Pointer) uint32

//go:wasmimport env proxy_grpc_send
func proxyGrpcSend(token uint32, message unsafe.Pointer, messageLen uint32, endStream uint32) uint32

//go:wasmimport env proxy_grpc_cancel
func proxyGrpcCancel(token uint32) uint32

//go:wasmimport env proxy_grpc_close
func proxyGrpcClose(token uint32) uint32

//go:wasmimport env proxy_get_status
func proxyGetStatus(retCode, retMessage, retMessageLen unsafe.Pointer) uint32
