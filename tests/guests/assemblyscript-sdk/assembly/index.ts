// as-sdk-probe: exercises sdk/assemblyscript beyond the api-key example — an http_call that
// decides allow/deny, gRPC calls and a stream to cluster `grpc`, request body buffering and rewrite, shared data with CAS, a tick, a
// shared queue, a counter and properties — so the tests can check each through the gateway.
export * from "@rustygate/proxy-wasm/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, FilterDataStatusValues,
  stream_context, send_local_response, continue_request, makeHeaderPair, GrpcStatusValues,
  get_buffer_bytes, set_buffer_bytes, BufferTypeValues, get_shared_data, set_shared_data,
  register_shared_queue, enqueue_shared_queue, dequeue_shared_queue, set_tick_period_milliseconds,
  get_property_path, Counter, WasmResultValues, log, LogLevelValues, get_grpc_status, grpc_send,
  grpc_close, get_header_map_pairs, HeaderMapTypeValues,
} from "@rustygate/proxy-wasm";

class ProbeRoot extends RootContext {
  requests: Counter | null = null;
  queue: u32 = 0;

  onConfigure(size: u32): bool {
    super.onConfigure(size);
    this.requests = new Counter("as_sdk_requests");
    const q = register_shared_queue("as-sdk-items");
    if (q.result != WasmResultValues.Ok) return false;
    this.queue = q.queue_id;
    return set_tick_period_milliseconds(20) == WasmResultValues.Ok;
  }

  onTick(): void {
    addShared("ticks");
  }

  onQueueReady(queue_id: u32): void {
    while (true) {
      const item = dequeue_shared_queue(queue_id);
      if (item.result != WasmResultValues.Ok) return;
      set_shared_data("last-item", item.data);
    }
  }

  createContext(context_id: u32): Context {
    return new Probe(context_id, this);
  }
}

class Probe extends Context {
  path: string = "";
  grpcSeen: string[] = [];

  onRequestHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const root = this.root_context as ProbeRoot;
    root.requests!.increment(1);
    this.path = stream_context.headers.request.get(":path");
    stream_context.headers.request.replace("x-hits", addShared("hits").toString());
    if (this.path == "/call/allow" || this.path == "/call/deny") {
      const call = [makeHeaderPair(":method", "GET"), makeHeaderPair(":path", this.path), makeHeaderPair(":authority", "auth")];
      const r = root.httpCall(root.getConfiguration(), call, new ArrayBuffer(0), [], 5000, this, onAuth);
      if (r != WasmResultValues.Ok) {
        send_local_response(500, "dispatch_failed", String.UTF8.encode("dispatch failed"), [], GrpcStatusValues.InvalidCode);
      }
      return FilterHeadersStatusValues.StopIteration;
    }
    if (this.path == "/enqueue") enqueue_shared_queue(root.queue, String.UTF8.encode("item-from-request"));
    if (this.path == "/grpc/Unary" || this.path == "/grpc/Deny") {
      const md = [makeHeaderPair("x-user", "gopher")];
      const r = root.grpcCall("grpc", "test.Echo", this.path.substring(6), md, String.UTF8.encode("go"), 2000, this, onGrpc);
      if (r != WasmResultValues.Ok) {
        send_local_response(500, "grpc_failed", String.UTF8.encode("grpc call failed"), [], GrpcStatusValues.InvalidCode);
      }
      return FilterHeadersStatusValues.StopIteration;
    }
    if (this.path == "/grpc/stream") {
      const s = root.grpcStream("grpc", "test.Echo", "Chat", [], this);
      if (s.result != WasmResultValues.Ok) {
        send_local_response(500, "grpc_failed", String.UTF8.encode("grpc stream failed"), [], GrpcStatusValues.InvalidCode);
        return FilterHeadersStatusValues.StopIteration;
      }
      grpc_send(s.token, String.UTF8.encode("one"), false);
      grpc_send(s.token, String.UTF8.encode("two"), false);
      grpc_close(s.token);
      return FilterHeadersStatusValues.StopIteration;
    }
    return FilterHeadersStatusValues.Continue;
  }

  onGrpcStreamInitialMetadata(token: u32, elements: u32): void {
    const md = get_header_map_pairs(HeaderMapTypeValues.GrpcReceiveInitialMetadata);
    for (let i = 0; i < md.length; i++) {
      if (String.UTF8.decode(md[i].key) == "x-server") this.grpcSeen.push("server=" + String.UTF8.decode(md[i].value));
    }
  }

  onGrpcStreamMessage(token: u32, size: u32): void {
    this.grpcSeen.push(String.UTF8.decode(get_buffer_bytes(BufferTypeValues.GrpcReceiveBuffer, 0, size)));
  }

  onGrpcStreamTrailingMetadata(token: u32, elements: u32): void {
    const md = get_header_map_pairs(HeaderMapTypeValues.GrpcReceiveTrailingMetadata);
    for (let i = 0; i < md.length; i++) {
      if (String.UTF8.decode(md[i].key) == "x-trailer") this.grpcSeen.push("trailer=" + String.UTF8.decode(md[i].value));
    }
  }

  onGrpcStreamClose(token: u32, status: u32): void {
    stream_context.headers.request.add("x-grpc-stream", this.grpcSeen.join(","));
    stream_context.headers.request.add("x-grpc-stream-status", status.toString());
    continue_request();
  }

  onRequestBody(body_buffer_length: usize, end_of_stream: bool): FilterDataStatusValues {
    if (this.path != "/upper") return FilterDataStatusValues.Continue;
    // Paused: the next call sees everything received so far.
    if (!end_of_stream) return FilterDataStatusValues.StopIterationAndBuffer;
    const body = String.UTF8.decode(get_buffer_bytes(BufferTypeValues.HttpRequestBody, 0, <u32>body_buffer_length));
    set_buffer_bytes(BufferTypeValues.HttpRequestBody, 0, <u32>body_buffer_length, String.UTF8.encode(body.toUpperCase()));
    return FilterDataStatusValues.Continue;
  }

  onResponseHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const root = this.root_context as ProbeRoot;
    const h = stream_context.headers.response;
    h.add("x-property-path", String.UTF8.decode(get_property_path(["request", "path"])));
    h.add("x-ticks", readShared("ticks").toString());
    const item = get_shared_data("last-item");
    if (item.result == WasmResultValues.Ok) h.add("x-last-item", String.UTF8.decode(item.value));
    h.add("x-requests", root.requests!.get().toString());
    return FilterHeadersStatusValues.Continue;
  }

  onLog(): void {
    log(LogLevelValues.info, "as-sdk-probe: done with " + this.path);
  }
}

// Runs with the request as the current context, after the auth upstream answered.
function onAuth(origin: Context, headers: u32, body_size: usize, trailers: u32): void {
  const status = stream_context.headers.http_callback.get(":status");
  if (status != "200") {
    send_local_response(403, "denied", String.UTF8.encode("denied by as-sdk-probe\n"),
      [makeHeaderPair("x-auth-status", status)], GrpcStatusValues.InvalidCode);
    return;
  }
  const body = get_buffer_bytes(BufferTypeValues.HttpCallResponseBody, 0, <u32>body_size);
  stream_context.headers.request.add("x-auth-body-bytes", body.byteLength.toString());
  continue_request();
}

// A unary gRPC call's answer: the reply resumes the request, a failure answers 403.
function onGrpc(origin: Context, status: u32, size: u32): void {
  if (status != 0) {
    const s = get_grpc_status();
    send_local_response(403, "denied", String.UTF8.encode("denied by grpc\n"),
      [makeHeaderPair("x-grpc-status", status.toString()), makeHeaderPair("x-grpc-message", s.message)],
      GrpcStatusValues.InvalidCode);
    return;
  }
  const reply = get_buffer_bytes(BufferTypeValues.GrpcReceiveBuffer, 0, size);
  stream_context.headers.request.add("x-grpc-reply", String.UTF8.decode(reply));
  continue_request();
}

function readShared(key: string): u64 {
  const d = get_shared_data(key);
  if (d.result != WasmResultValues.Ok || d.value.byteLength != 8) return 0;
  return load<u64>(changetype<usize>(d.value));
}

// Adds one to a counter shared by every worker's VM, retrying on CAS conflicts.
function addShared(key: string): u64 {
  while (true) {
    const d = get_shared_data(key);
    let n: u64 = 0;
    if (d.result == WasmResultValues.Ok && d.value.byteLength == 8) n = load<u64>(changetype<usize>(d.value));
    const next = new ArrayBuffer(8);
    store<u64>(changetype<usize>(next), n + 1);
    if (set_shared_data(key, next, d.cas) != WasmResultValues.CasMismatch) return n + 1;
  }
}

registerRootContext((context_id: u32): RootContext => new ProbeRoot(context_id), "as-sdk-probe");
