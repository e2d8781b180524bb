// go-sdk-probe: exercises sdk/go beyond the api-key example — an http_call that decides
// allow/deny, gRPC calls and a stream to cluster `grpc`, request body buffering and rewrite,
// shared data with CAS, a tick, a shared queue, a counter, properties and trailers — so the
// tests can check each through the gateway.
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"

	"rustygate.dev/sdk/go/proxywasm"
)

func init() {
	proxywasm.SetNewRootContext(func(uint32) proxywasm.RootContext { return &root{} })
}

func main() {}

type root struct {
	proxywasm.DefaultRootContext
	cluster  string
	requests proxywasm.MetricCounter
	queue    uint32
}

func (r *root) OnPluginStart(int) bool {
	raw, err := proxywasm.GetPluginConfiguration()
	if err != nil {
		return false
	}
	r.cluster = string(bytes.TrimSpace(raw))
	r.requests = proxywasm.DefineCounterMetric("go_sdk_requests")
	if r.queue, err = proxywasm.RegisterSharedQueue("go-sdk-items"); err != nil {
		return false
	}
	return proxywasm.SetTickPeriodMilliSeconds(20) == nil
}

func (r *root) OnTick() { addShared("ticks") }

func (r *root) OnQueueReady(queueID uint32) {
	for {
		item, err := proxywasm.DequeueSharedQueue(queueID)
		if errors.Is(err, proxywasm.ErrEmpty) || err != nil {
			return
		}
		proxywasm.SetSharedData("last-item", item, 0)
	}
}

func (r *root) NewHttpContext(uint32) proxywasm.HttpContext { return &stream{root: r} }

type stream struct {
	proxywasm.DefaultHttpContext
	root     *root
	path     string
	grpcSeen []string
}

func (s *stream) OnHttpRequestHeaders(int, bool) proxywasm.Action {
	s.root.requests.Increment(1)
	s.path, _ = proxywasm.GetHttpRequestHeader(":path")
	proxywasm.ReplaceHttpRequestHeader("x-hits", strconv.FormatUint(addShared("hits"), 10))
	switch s.path {
	case "/call/allow", "/call/deny":
		headers := [][2]string{{":method", "GET"}, {":path", s.path}, {":authority", "auth"}}
		if _, err := proxywasm.DispatchHttpCall(s.root.cluster, headers, nil, nil, 5000, s.onAuth); err != nil {
			proxywasm.SendHttpResponse(500, nil, []byte("dispatch failed: "+err.Error()), -1)
		}
		return proxywasm.ActionPause
	case "/enqueue":
		proxywasm.EnqueueSharedQueue(s.root.queue, []byte("item-from-request"))
	case "/grpc/Unary", "/grpc/Deny":
		md := [][2]string{{"x-user", "gopher"}}
		if _, err := proxywasm.DispatchGrpcCall("grpc", "test.Echo", s.path[len("/grpc/"):], md,
			[]byte("go"), 2000, s.onGrpc); err != nil {
			proxywasm.SendHttpResponse(500, nil, []byte("grpc call failed: "+err.Error()), -1)
		}
		return proxywasm.ActionPause
	case "/grpc/stream":
		token, err := proxywasm.OpenGrpcStream("grpc", "test.Echo", "Chat", nil, s)
		if err != nil {
			proxywasm.SendHttpResponse(500, nil, []byte("grpc stream failed: "+err.Error()), -1)
			return proxywasm.ActionPause
		}
		proxywasm.SendGrpcStreamMessage(token, []byte("one"), false)
		proxywasm.SendGrpcStreamMessage(token, []byte("two"), false)
		proxywasm.CloseGrpcStream(token)
		return proxywasm.ActionPause
	}
	return proxywasm.ActionContinue
}

// A unary gRPC call's answer: the reply resumes the request, a failure answers 403.
func (s *stream) onGrpc(status uint32, size int) {
	if status != 0 {
		_, message, _ := proxywasm.GetGrpcStatus()
		proxywasm.SendHttpResponse(403, [][2]string{{"x-grpc-status", strconv.Itoa(int(status))},
			{"x-grpc-message", message}}, []byte("denied by grpc\n"), -1)
		return
	}
	reply, _ := proxywasm.GetGrpcReceiveBuffer(0, size)
	proxywasm.AddHttpRequestHeader("x-grpc-reply", string(reply))
	proxywasm.ResumeHttpRequest()
}

func (s *stream) OnGrpcStreamInitialMetadata(int) {
	md, _ := proxywasm.GetGrpcInitialMetadata()
	for _, kv := range md {
		if kv[0] == "x-server" {
			s.grpcSeen = append(s.grpcSeen, "server="+kv[1])
		}
	}
}

func (s *stream) OnGrpcStreamMessage(size int) {
	m, _ := proxywasm.GetGrpcReceiveBuffer(0, size)
	s.grpcSeen = append(s.grpcSeen, string(m))
}

func (s *stream) OnGrpcStreamTrailingMetadata(int) {
	md, _ := proxywasm.GetGrpcTrailingMetadata()
	for _, kv := range md {
		if kv[0] == "x-trailer" {
			s.grpcSeen = append(s.grpcSeen, "trailer="+kv[1])
		}
	}
}

func (s *stream) OnGrpcStreamClose(status uint32) {
	proxywasm.AddHttpRequestHeader("x-grpc-stream", strings.Join(s.grpcSeen, ","))
	proxywasm.AddHttpRequestHeader("x-grpc-stream-status", strconv.Itoa(int(status)))
	proxywasm.ResumeHttpRequest()
}

// Runs with this request as the current context, after the auth upstream answered.
func (s *stream) onAuth(numHeaders, bodySize, numTrailers int) {
	status, _ := proxywasm.GetHttpCallResponseHeader(":status")
	body, _ := proxywasm.GetHttpCallResponseBody(0, bodySize)
	if status != "200" {
		proxywasm.SendHttpResponse(403, [][2]string{{"x-auth-status", status}}, []byte("denied by go-sdk-probe\n"), -1)
		return
	}
	proxywasm.AddHttpRequestHeader("x-auth-body-bytes", strconv.Itoa(len(body)))
	proxywasm.ResumeHttpRequest()
}

func (s *stream) OnHttpRequestBody(bodySize int, endOfStream bool) proxywasm.Action {
	if s.path != "/upper" {
		return proxywasm.ActionContinue
	}
	if !endOfStream {
		// Paused: the next call sees everything received so far.
		return proxywasm.ActionPause
	}
	body, err := proxywasm.GetHttpRequestBody(0, bodySize)
	if err != nil {
		return proxywasm.ActionContinue
	}
	proxywasm.ReplaceHttpRequestBody(bytes.ToUpper(body))
	return proxywasm.ActionContinue
}

func (s *stream) OnHttpResponseHeaders(int, bool) proxywasm.Action {
	path, _ := proxywasm.GetProperty([]string{"request", "path"})
	proxywasm.AddHttpResponseHeader("x-property-path", string(path))
	proxywasm.AddHttpResponseHeader("x-ticks", strconv.FormatUint(readShared("ticks"), 10))
	if item, _, err := proxywasm.GetSharedData("last-item"); err == nil {
		proxywasm.AddHttpResponseHeader("x-last-item", string(item))
	}
	proxywasm.AddHttpResponseHeader("x-requests", strconv.FormatUint(s.root.requests.Value(), 10))
	return proxywasm.ActionContinue
}

func (s *stream) OnHttpStreamDone() {
	proxywasm.LogInfo("go-sdk-probe: done with " + s.path)
}

func readShared(key string) uint64 {
	b, _, err := proxywasm.GetSharedData(key)
	if err != nil || len(b) != 8 {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

// addShared adds one to a counter shared by every worker's VM, retrying on CAS conflicts.
func addShared(key string) uint64 {
	for {
		b, cas, err := proxywasm.GetSharedData(key)
		var n uint64
		if err == nil && len(b) == 8 {
			n = binary.LittleEndian.Uint64(b)
		} else if err != nil && !errors.Is(err, proxywasm.ErrNotFound) {
			return 0
		}
		next := binary.LittleEndian.AppendUint64(nil, n+1)
		if err := proxywasm.SetSharedData(key, next, cas); !errors.Is(err, proxywasm.ErrCasMismatch) {
			return n + 1
		}
	}
}
