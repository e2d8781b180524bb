//go:build wasip1

package proxywasm

import (
	"errors"
	"strconv"
)

// Errors a host call can return, one per proxy-wasm status. Compare with errors.Is.
var (
	ErrNotFound             = errors.New("proxy-wasm: not found")
	ErrBadArgument          = errors.New("proxy-wasm: bad argument")
	ErrSerializationFailure = errors.New("proxy-wasm: serialization failure")
	ErrParseFailure         = errors.New("proxy-wasm: parse failure")
	ErrInvalidMemoryAccess  = errors.New("proxy-wasm: invalid memory access")
	ErrEmpty                = errors.New("proxy-wasm: empty")
	ErrCasMismatch          = errors.New("proxy-wasm: compare-and-swap mismatch")
	ErrInternalFailure      = errors.New("proxy-wasm: internal failure")
	ErrUnimplemented        = errors.New("proxy-wasm: unimplemented")
)

func statusErr(status uint32) error {
	switch status {
	case 0:
		return nil
	case 1:
		return ErrNotFound
	case 2:
		return ErrBadArgument
	case 3:
		return ErrSerializationFailure
	case 4:
		return ErrParseFailure
	case 6:
		return ErrInvalidMemoryAccess
	case 7:
		return ErrEmpty
	case 8:
		return ErrCasMismatch
	case 10:
		return ErrInternalFailure
	case 12:
		return ErrUnimplemented
	}
	return errors.New("proxy-wasm: unknown status " + strconv.FormatUint(uint64(status), 10))
}
