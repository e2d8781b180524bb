//go:build wasip1

package proxywasm

import "unsafe"

// The host returns data by calling proxy_on_memory_allocate and writing (pointer, length) into
// our return slots. Go's collector does not move objects, but it frees what nothing references,
// so every buffer handed to the host is held here until the call that asked for it takes it
// back. A host call runs to completion before the next, so the table stays tiny.
var lent = map[uintptr][]byte{}

//go:wasmexport proxy_on_memory_allocate
func proxyOnMemoryAllocate(size uint32) uint32 {
	// The ABI never asks for zero bytes; answering with a real one-byte buffer keeps a
	// pointer valid even if a host does.
	b := make([]byte, max(size, 1))
	p := uintptr(unsafe.Pointer(&b[0]))
	lent[p] = b
	return uint32(p)
}

// take returns the bytes the host wrote at (ptr, size) and releases our hold on them.
func take(ptr, size uint32) []byte {
	if ptr == 0 {
		return nil
	}
	b, ok := lent[uintptr(ptr)]
	if !ok {
		return nil
	}
	delete(lent, uintptr(ptr))
	if int(size) > len(b) {
		size = uint32(len(b))
	}
	return b[:size:size]
}

// ptr is the address of b's first byte, or nil for an empty slice (the ABI's (0, 0)).
func ptr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

// strPtr is ptr for a string without copying it; the host only reads through it.
func strPtr(s string) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(unsafe.StringData(s))
}
