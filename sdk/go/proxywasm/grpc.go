//go:build wasip1

package proxywasm

import (
	"unsafe"

	"rustygate.dev/sdk/go/internal/wire"
)

// gRPC calls from filters, as Envoy runs them: a unary call answers once (status 0 with its
// reply, or the failure's status); a stream reports its initial metadata, each message, its
// trailing metadata and its close.

const (
	bufferGrpcReceive       = 5
	mapGrpcInitialMetadata  = 4
	mapGrpcTrailingMetadata = 5
)

// GrpcStreamHandler receives the events of a stream opened with OpenGrpcStream, with the
// context that opened it current.
type GrpcStreamHandler interface {
	OnGrpcStreamInitialMetadata(numElements int)
	OnGrpcStreamMessage(size int)
	OnGrpcStreamTrailingMetadata(numElements int)
	OnGrpcStreamClose(status uint32)
}

type grpcCallout struct {
	contextID uint32
	unary     func(status uint32, size int)
	stream    GrpcStreamHandler
}

// DispatchGrpcCall calls service/method on the configured cluster with message and the
// request metadata. callback runs with the calling context current: status 0 with the
// reply's size (read it with GetGrpcReceiveBuffer), or the gRPC status of the failure (its
// message from GetGrpcStatus). timeoutMs 0 means no deadline.
func DispatchGrpcCall(cluster, service, method string, metadata [][2]string, message []byte,
	timeoutMs uint32, callback func(status uint32, size int)) (uint32, error) {
	md := wire.EncodeMap(metadata)
	var token uint32
	err := statusErr(proxyGrpcCall(strPtr(cluster), uint32(len(cluster)), strPtr(service),
		uint32(len(service)), strPtr(method), uint32(len(method)), ptr(md), uint32(len(md)),
		ptr(message), uint32(len(message)), timeoutMs, unsafe.Pointer(&token)))
	if err != nil {
		return 0, err
	}
	rootOf(currentContextID).grpc[token] = grpcCallout{contextID: currentContextID, unary: callback}
	return token, nil
}

// OpenGrpcStream opens a stream to service/method on the configured cluster; its events go
// to h. Send with SendGrpcStreamMessage, half-close with CloseGrpcStream.
func OpenGrpcStream(cluster, service, method string, metadata [][2]string, h GrpcStreamHandler) (uint32, error) {
	md := wire.EncodeMap(metadata)
	var token uint32
	err := statusErr(proxyGrpcStream(strPtr(cluster), uint32(len(cluster)), strPtr(service),
		uint32(len(service)), strPtr(method), uint32(len(method)), ptr(md), uint32(len(md)),
		unsafe.Pointer(&token)))
	if err != nil {
		return 0, err
	}
	rootOf(currentContextID).grpc[token] = grpcCallout{contextID: currentContextID, stream: h}
	return token, nil
}

// SendGrpcStreamMessage sends one message; endStream half-closes after it.
func SendGrpcStreamMessage(token uint32, message []byte, endStream bool) error {
	end := uint32(0)
	if endStream {
		end = 1
	}
	return statusErr(proxyGrpcSend(token, ptr(message), uint32(len(message)), end))
}

// CloseGrpcStream half-closes a stream: the server's messages and status still arrive.
func CloseGrpcStream(token uint32) error { return statusErr(proxyGrpcClose(token)) }

// CancelGrpc ends a call or stream at once; no callback for it follows.
func CancelGrpc(token uint32) error {
	delete(rootOf(currentContextID).grpc, token)
	return statusErr(proxyGrpcCancel(token))
}

// GetGrpcReceiveBuffer is the reply (unary) or the message (stream) being delivered.
func GetGrpcReceiveBuffer(start, size int) ([]byte, error) {
	return getBuffer(bufferGrpcReceive, start, size)
}

// GetGrpcInitialMetadata and GetGrpcTrailingMetadata are a stream's metadata, during the
// callbacks that report them.
func GetGrpcInitialMetadata() ([][2]string, error)  { return getMap(mapGrpcInitialMetadata) }
func GetGrpcTrailingMetadata() ([][2]string, error) { return getMap(mapGrpcTrailingMetadata) }

// GetGrpcStatus is the status and message of the call whose close is being delivered.
func GetGrpcStatus() (uint32, string, error) {
	var code, p, n uint32
	if err := statusErr(proxyGetStatus(unsafe.Pointer(&code), unsafe.Pointer(&p), unsafe.Pointer(&n))); err != nil {
		return 0, "", err
	}
	return code, string(take(p, n)), nil
}

// rootOf is the root context owning calls made from context id.
func rootOf(id uint32) *rootState {
	if s, ok := streams[id]; ok {
		return roots[s.rootID]
	}
	return roots[id]
}

// grpcEvent finds the call, makes its context current and runs deliver; a call the filter
// cancelled, or whose request has ended, gets nothing.
func grpcEvent(rootID, token uint32, last bool, deliver func(c grpcCallout)) {
	r := root(rootID)
	c, ok := r.grpc[token]
	if !ok {
		return
	}
	if last {
		delete(r.grpc, token)
	}
	if enterCallout(rootID, c.contextID) {
		deliver(c)
	}
}

//go:wasmexport proxy_on_grpc_receive_initial_metadata
func proxyOnGrpcReceiveInitialMetadata(rootID, token, n uint32) {
	grpcEvent(rootID, token, false, func(c grpcCallout) {
		if c.stream != nil {
			c.stream.OnGrpcStreamInitialMetadata(int(n))
		}
	})
}

//go:wasmexport proxy_on_grpc_receive
func proxyOnGrpcReceive(rootID, token, size uint32) {
	r := root(rootID)
	unary := r.grpc[token].unary != nil
	grpcEvent(rootID, token, unary, func(c grpcCallout) {
		if c.unary != nil {
			c.unary(0, int(size))
		} else {
			c.stream.OnGrpcStreamMessage(int(size))
		}
	})
}

//go:wasmexport proxy_on_grpc_receive_trailing_metadata
func proxyOnGrpcReceiveTrailingMetadata(rootID, token, n uint32) {
	grpcEvent(rootID, token, false, func(c grpcCallout) {
		if c.stream != nil {
			c.stream.OnGrpcStreamTrailingMetadata(int(n))
		}
	})
}

//go:wasmexport proxy_on_grpc_close
func proxyOnGrpcClose(rootID, token, status uint32) {
	grpcEvent(rootID, token, true, func(c grpcCallout) {
		if c.unary != nil {
			c.unary(status, 0)
		} else {
			c.stream.OnGrpcStreamClose(status)
		}
	})
}
