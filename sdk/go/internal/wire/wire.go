// Package wire encodes and decodes the proxy-wasm map format and property paths. It has no
// host dependency, so it is unit-tested natively (go test ./internal/...).
package wire

import (
	"encoding/binary"
	"errors"
)

// ErrMalformed is returned for a map whose lengths do not add up to its size.
var ErrMalformed = errors.New("proxy-wasm: malformed serialized map")

// EncodeMap writes pairs as: count, all (name_len, value_len) pairs, then each name and value
// followed by a NUL. All integers are little-endian u32.
func EncodeMap(pairs [][2]string) []byte {
	size := 4
	for _, p := range pairs {
		size += 8 + len(p[0]) + len(p[1]) + 2
	}
	out := make([]byte, 0, size)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(pairs)))
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

// DecodeMap is EncodeMap's inverse. An empty input is an empty map (hosts answer (0, 0)).
func DecodeMap(raw []byte) ([][2]string, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	if len(raw) < 4 {
		return nil, ErrMalformed
	}
	count := int(binary.LittleEndian.Uint32(raw))
	// Each pair needs at least 8 bytes of lengths and two NULs.
	if count > (len(raw)-4)/10 {
		return nil, ErrMalformed
	}
	pairs := make([][2]string, count)
	lens := raw[4:]
	data := 4 + 8*count
	for i := 0; i < count; i++ {
		nameLen := int(binary.LittleEndian.Uint32(lens[8*i:]))
		valueLen := int(binary.LittleEndian.Uint32(lens[8*i+4:]))
		if nameLen < 0 || valueLen < 0 || data+nameLen+valueLen+2 > len(raw) {
			return nil, ErrMalformed
		}
		pairs[i][0] = string(raw[data : data+nameLen])
		data += nameLen + 1
		pairs[i][1] = string(raw[data : data+valueLen])
		data += valueLen + 1
	}
	return pairs, nil
}

// EncodePath joins property path segments with NUL, as Envoy expects ("a\x00b").
func EncodePath(path []string) []byte {
	var out []byte
	for i, seg := range path {
		if i > 0 {
			out = append(out, 0)
		}
		out = append(out, seg...)
	}
	return out
}
