// The proxy-wasm host functions this filter uses, declared by hand (no SDK, no external
// modules), and the helpers that move bytes across the ABI: the host hands data back by
// calling proxy_on_memory_allocate and writing (pointer, length) into our return slots.
package main

import (
	"encoding/binary"
	"unsafe"
)

//go:wasmimport env proxy_log
func proxyLog(level uint32, msg unsafe.Pointer, msgLen uint32) uint32

//go:wasmimport env proxy_get_buffer_bytes
func proxyGetBufferBytes(kind, start, maxSize uint32, retPtr, retLen unsafe.Pointer) uint32

//go:wasmimport env proxy_set_buffer_bytes
func proxySetBufferBytes(kind, start, size uint32, data unsafe.Pointer, dataLen uint32) uint32

//go:wasmimport env proxy_get_header_map_value
func proxyGetHeaderMapValue(kind uint32, key unsafe.Pointer, keyLen uint32, retPtr, retLen unsafe.Pointer) uint32

//go:wasmimport env proxy_get_header_map_pairs
func proxyGetHeaderMapPairs(kind uint32, retPtr, retLen unsafe.Pointer) uint32

//go:wasmimport env proxy_add_header_map_value
func proxyAddHeaderMapValue(kind uint32, key unsafe.Pointer, keyLen uint32, value unsafe.Pointer, valueLen uint32) uint32

//go:wasmimport env proxy_replace_header_map_value
func proxyReplaceHeaderMapValue(kind uint32, key unsafe.Pointer, keyLen uint32, value unsafe.Pointer, valueLen uint32) uint32

//go:wasmimport env proxy_remove_header_map_value
func proxyRemoveHeaderMapValue(kind uint32, key unsafe.Pointer, keyLen uint32) uint32

//go:wasmimport env proxy_send_local_response
func proxySendLocalResponse(status uint32, details unsafe.Pointer, detailsLen uint32, body unsafe.Pointer, bodyLen uint32, headers unsafe.Pointer, headersLen uint32, grpcStatus int32) uint32

//go:wasmimport env proxy_get_property
func proxyGetProperty(path unsafe.Pointer, pathLen uint32, retPtr, retLen unsafe.Pointer) uint32

//go:wasmimport env proxy_get_shared_data
func proxyGetSharedData(key unsafe.Pointer, keyLen uint32, retPtr, retLen, retCas unsafe.Pointer) uint32

//go:wasmimport env proxy_set_shared_data
func proxySetSharedData(key unsafe.Pointer, keyLen uint32, value unsafe.Pointer, valueLen uint32, cas uint32) uint32

//go:wasmimport env proxy_define_metric
func proxyDefineMetric(kind uint32, name unsafe.Pointer, nameLen uint32, retID unsafe.Pointer) uint32

//go:wasmimport env proxy_increment_metric
func proxyIncrementMetric(id uint32, delta int64) uint32

const (
	statusOK          = 0
	statusNotFound    = 1
	statusCasMismatch = 8

	mapRequestHeaders  = 0
	mapResponseHeaders = 2

	bufferRequestBody         = 0
	bufferPluginConfiguration = 7

	logInfo = 2
)

// Buffers handed to the host stay reachable here until we take them back.
var allocs = map[uintptr][]byte{}

//go:wasmexport proxy_on_memory_allocate
func onMemoryAllocate(size uint32) uint32 {
	if size == 0 {
		size = 1
	}
	b := make([]byte, size)
	p := uintptr(unsafe.Pointer(&b[0]))
	allocs[p] = b
	return uint32(p)
}

// take returns what the host wrote through (ptr, len) and releases our hold on it.
func take(ptr, size uint32) []byte {
	if ptr == 0 || size == 0 {
		return nil
	}
	b, ok := allocs[uintptr(ptr)]
	if !ok {
		return nil
	}
	delete(allocs, uintptr(ptr))
	return b[:size]
}

func ptrOf(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func logf(msg string) {
	b := []byte(msg)
	proxyLog(logInfo, ptrOf(b), uint32(len(b)))
}

func bufferBytes(kind, start, size uint32) []byte {
	var ptr, n uint32
	if proxyGetBufferBytes(kind, start, size, unsafe.Pointer(&ptr), unsafe.Pointer(&n)) != statusOK {
		return nil
	}
	return take(ptr, n)
}

func header(kind uint32, key string) (string, bool) {
	k := []byte(key)
	var ptr, n uint32
	if proxyGetHeaderMapValue(kind, ptrOf(k), uint32(len(k)), unsafe.Pointer(&ptr), unsafe.Pointer(&n)) != statusOK {
		return "", false
	}
	return string(take(ptr, n)), true
}

func addHeader(kind uint32, key, value string) {
	k, v := []byte(key), []byte(value)
	proxyAddHeaderMapValue(kind, ptrOf(k), uint32(len(k)), ptrOf(v), uint32(len(v)))
}

func replaceHeader(kind uint32, key, value string) {
	k, v := []byte(key), []byte(value)
	proxyReplaceHeaderMapValue(kind, ptrOf(k), uint32(len(k)), ptrOf(v), uint32(len(v)))
}

func removeHeader(kind uint32, key string) {
	k := []byte(key)
	proxyRemoveHeaderMapValue(kind, ptrOf(k), uint32(len(k)))
}

// headerCount decodes the serialized map: count, then (name_len, value_len) pairs, then data.
func headerCount(kind uint32) int {
	var ptr, n uint32
	if proxyGetHeaderMapPairs(kind, unsafe.Pointer(&ptr), unsafe.Pointer(&n)) != statusOK {
		return -1
	}
	raw := take(ptr, n)
	if len(raw) < 4 {
		return 0
	}
	return int(binary.LittleEndian.Uint32(raw))
}

// serializeMap encodes headers in the proxy-wasm map format.
func serializeMap(pairs [][2]string) []byte {
	out := binary.LittleEndian.AppendUint32(nil, uint32(len(pairs)))
	for _, p := range pairs {
		out = binary.LittleEndian.AppendUint32(out, uint32(len(p[0])))
		out = binary.LittleEndian.AppendUint32(out, uint32(len(p[1])))
	}
	for _, p := range pairs {
		out = append(append(out, p[0]...), 0)
		out = append(append(out, p[1]...), 0)
	}
	return out
}

func sendLocalResponse(status uint32, body string, headers [][2]string) {
	details, b, h := []byte("go_probe"), []byte(body), serializeMap(headers)
	proxySendLocalResponse(status, ptrOf(details), uint32(len(details)), ptrOf(b), uint32(len(b)), ptrOf(h), uint32(len(h)), -1)
}

func property(path ...string) string {
	var raw []byte
	for i, seg := range path {
		if i > 0 {
			raw = append(raw, 0)
		}
		raw = append(raw, seg...)
	}
	var ptr, n uint32
	if proxyGetProperty(ptrOf(raw), uint32(len(raw)), unsafe.Pointer(&ptr), unsafe.Pointer(&n)) != statusOK {
		return ""
	}
	return string(take(ptr, n))
}

// sharedAdd adds one to a shared-data counter with compare-and-swap; returns the new value.
func sharedAdd(key string) uint64 {
	k := []byte(key)
	for {
		var ptr, n, cas uint32
		st := proxyGetSharedData(ptrOf(k), uint32(len(k)), unsafe.Pointer(&ptr), unsafe.Pointer(&n), unsafe.Pointer(&cas))
		var value uint64
		if st == statusOK {
			if b := take(ptr, n); len(b) == 8 {
				value = binary.LittleEndian.Uint64(b)
			}
		} else if st != statusNotFound {
			return 0
		}
		next := binary.LittleEndian.AppendUint64(nil, value+1)
		if proxySetSharedData(ptrOf(k), uint32(len(k)), ptrOf(next), uint32(len(next)), cas) != statusCasMismatch {
			return value + 1
		}
	}
}

func defineCounter(name string) uint32 {
	b := []byte(name)
	var id uint32
	if proxyDefineMetric(0, ptrOf(b), uint32(len(b)), unsafe.Pointer(&id)) != statusOK {
		return 0
	}
	return id
}
