// RustyGate's AssemblyScript SDK for proxy-wasm (ABI 0.2.1), for the current AssemblyScript
// compiler. Names and shapes follow @solo-io/proxy-runtime so its filters port by changing
// the import path; behaviour follows Envoy's host.
import * as imports from "./imports";

// ---- enums (values as the ABI and Envoy define them) ----

export enum LogLevelValues { trace, debug, info, warn, error, critical }
export enum FilterStatusValues { Continue = 0, StopIteration = 1 }
export enum FilterHeadersStatusValues {
  Continue = 0,
  StopIteration = 1,
  ContinueAndEndStream = 2,
  StopAllIterationAndBuffer = 3,
  StopAllIterationAndWatermark = 4,
}
export enum FilterMetadataStatusValues { Continue = 0 }
export enum FilterTrailersStatusValues { Continue = 0, StopIteration = 1 }
export enum FilterDataStatusValues {
  Continue = 0,
  StopIterationAndBuffer = 1,
  StopIterationAndWatermark = 2,
  StopIterationNoBuffer = 3,
}
export enum GrpcStatusValues {
  Ok = 0, Canceled = 1, Unknown = 2, InvalidArgument = 3, DeadlineExceeded = 4, NotFound = 5,
  AlreadyExists = 6, PermissionDenied = 7, ResourceExhausted = 8, FailedPrecondition = 9,
  Aborted = 10, OutOfRange = 11, Unimplemented = 12, Internal = 13, Unavailable = 14,
  DataLoss = 15, Unauthenticated = 16, MaximumValid = 16,
  // Not a gRPC answer: a plain HTTP local response.
  InvalidCode = -1,
}
export enum MetricTypeValues { Counter = 0, Gauge = 1, Histogram = 2 }
export enum WasmResultValues {
  Ok = 0, NotFound = 1, BadArgument = 2, SerializationFailure = 3, ParseFailure = 4,
  BadExpression = 5, InvalidMemoryAccess = 6, Empty = 7, CasMismatch = 8, ResultMismatch = 9,
  InternalFailure = 10, BrokenConnection = 11, Unimplemented = 12,
}
export enum HeaderMapTypeValues {
  RequestHeaders = 0, RequestTrailers = 1, ResponseHeaders = 2, ResponseTrailers = 3,
  GrpcReceiveInitialMetadata = 4, GrpcReceiveTrailingMetadata = 5,
  HttpCallResponseHeaders = 6, HttpCallResponseTrailers = 7,
}
export enum BufferTypeValues {
  HttpRequestBody = 0, HttpResponseBody = 1, NetworkDownstreamData = 2, NetworkUpstreamData = 3,
  HttpCallResponseBody = 4, GrpcReceiveBuffer = 5, VmConfiguration = 6, PluginConfiguration = 7,
  CallData = 8,
}
export enum StreamTypeValues { Request = 0, Response = 1, Downstream = 2, Upstream = 3 }

// ---- moving bytes across the ABI ----

// Return slots for host calls: (pointer, length, cas/id). One callback runs at a time.
const SLOTS: usize = memory.data(16);

// The host allocates returned data through proxy_on_memory_allocate (see exports.ts), which
// hands out pinned ArrayBuffers of exactly the requested size; taking one back unpins it, so
// the bytes become an ordinary managed buffer without a copy.
function takeReturned(): ArrayBuffer {
  const ptr = load<usize>(SLOTS);
  if (ptr == 0) return new ArrayBuffer(0);
  __unpin(ptr);
  return changetype<ArrayBuffer>(ptr);
}

function clearSlots(): void {
  store<u64>(SLOTS, 0);
  store<u64>(SLOTS + 8, 0);
}

function utf8(s: string): ArrayBuffer {
  return String.UTF8.encode(s);
}

function at(b: ArrayBuffer): usize {
  return changetype<usize>(b);
}

// ---- headers ----

export class HeaderPair {
  key: ArrayBuffer;
  value: ArrayBuffer;
  constructor(key: ArrayBuffer, value: ArrayBuffer) {
    this.key = key;
    this.value = value;
  }
  toString(): string {
    return String.UTF8.decode(this.key) + ": " + String.UTF8.decode(this.value);
  }
}
export type Headers = Array<HeaderPair>;

export function makeHeaderPair(key: string, value: string): HeaderPair {
  return new HeaderPair(utf8(key), utf8(value));
}

// The proxy-wasm map format: count, all (name_len, value_len) pairs, then each name and value
// NUL-terminated; integers little-endian u32.
export function serializeHeaders(headers: Headers): ArrayBuffer {
  let size = 4;
  for (let i = 0; i < headers.length; i++) {
    size += 8 + headers[i].key.byteLength + headers[i].value.byteLength + 2;
  }
  const out = new ArrayBuffer(size);
  const base = at(out);
  store<u32>(base, headers.length);
  let lens = base + 4;
  let data = base + 4 + 8 * headers.length;
  for (let i = 0; i < headers.length; i++) {
    const k = headers[i].key, v = headers[i].value;
    store<u32>(lens, k.byteLength);
    store<u32>(lens + 4, v.byteLength);
    lens += 8;
    memory.copy(data, at(k), k.byteLength);
    data += k.byteLength;
    store<u8>(data++, 0);
    memory.copy(data, at(v), v.byteLength);
    data += v.byteLength;
    store<u8>(data++, 0);
  }
  return out;
}

export function deserializeHeaders(raw: ArrayBuffer): Headers {
  const result: Headers = [];
  const len = raw.byteLength;
  if (len < 4) return result;
  const base = at(raw);
  const count = load<u32>(base);
  if (<u64>count * 10 > <u64>(len - 4)) return result;
  let data = 4 + 8 * <i32>count;
  for (let i = 0; i < <i32>count; i++) {
    const keyLen = <i32>load<u32>(base + 4 + 8 * i);
    const valueLen = <i32>load<u32>(base + 8 + 8 * i);
    if (keyLen < 0 || valueLen < 0 || data + keyLen + valueLen + 2 > len) return [];
    const key = raw.slice(data, data + keyLen);
    data += keyLen + 1;
    const value = raw.slice(data, data + valueLen);
    data += valueLen + 1;
    result.push(new HeaderPair(key, value));
  }
  return result;
}

// ---- host calls ----

export function log(level: LogLevelValues, message: string): void {
  const b = utf8(message);
  imports.proxy_log(<u32>level, at(b), b.byteLength);
}

export function get_log_level(): LogLevelValues {
  imports.proxy_get_log_level(SLOTS);
  return <LogLevelValues>load<u32>(SLOTS);
}

export function get_current_time_nanoseconds(): u64 {
  imports.proxy_get_current_time_nanoseconds(SLOTS);
  return load<u64>(SLOTS);
}

export function set_tick_period_milliseconds(ms: u32): WasmResultValues {
  return <WasmResultValues>imports.proxy_set_tick_period_milliseconds(ms);
}

// Property paths are NUL-separated segments: "request\0path", or pass the segments to
// get_property_path.
export function get_property(path: string): ArrayBuffer {
  const p = utf8(path);
  clearSlots();
  if (imports.proxy_get_property(at(p), p.byteLength, SLOTS, SLOTS + 4) != WasmResultValues.Ok) {
    return new ArrayBuffer(0);
  }
  return takeReturned();
}

export function get_property_path(segments: string[]): ArrayBuffer {
  return get_property(segments.join("\0"));
}

export function set_property(path: string, value: ArrayBuffer): WasmResultValues {
  const p = utf8(path);
  return <WasmResultValues>imports.proxy_set_property(at(p), p.byteLength, at(value), value.byteLength);
}

export function get_buffer_bytes(typ: BufferTypeValues, start: u32, length: u32): ArrayBuffer {
  clearSlots();
  if (imports.proxy_get_buffer_bytes(<u32>typ, start, length, SLOTS, SLOTS + 4) != WasmResultValues.Ok) {
    return new ArrayBuffer(0);
  }
  return takeReturned();
}

// Replaces `length` bytes at `start` (start 0, length 0 prepends; start past the end
// appends; start 0 with the whole length replaces).
export function set_buffer_bytes(typ: BufferTypeValues, start: u32, length: u32, data: ArrayBuffer): WasmResultValues {
  return <WasmResultValues>imports.proxy_set_buffer_bytes(<u32>typ, start, length, at(data), data.byteLength);
}

export function get_header_map_pairs(typ: HeaderMapTypeValues): Headers {
  clearSlots();
  if (imports.proxy_get_header_map_pairs(<u32>typ, SLOTS, SLOTS + 4) != WasmResultValues.Ok) return [];
  return deserializeHeaders(takeReturned());
}

export function set_header_map_pairs(typ: HeaderMapTypeValues, headers: Headers): WasmResultValues {
  const raw = serializeHeaders(headers);
  return <WasmResultValues>imports.proxy_set_header_map_pairs(<u32>typ, at(raw), raw.byteLength);
}

export class HeaderMapManipulator {
  constructor(public typ: HeaderMapTypeValues) {}
  // The first value of `key`, or "" when absent (use has() to tell the two apart).
  get(key: string): string {
    const k = utf8(key);
    clearSlots();
    if (imports.proxy_get_header_map_value(<u32>this.typ, at(k), k.byteLength, SLOTS, SLOTS + 4) != WasmResultValues.Ok) {
      return "";
    }
    return String.UTF8.decode(takeReturned());
  }
  has(key: string): bool {
    const k = utf8(key);
    clearSlots();
    const found = imports.proxy_get_header_map_value(<u32>this.typ, at(k), k.byteLength, SLOTS, SLOTS + 4) == WasmResultValues.Ok;
    if (found) takeReturned();
    return found;
  }
  add(key: string, value: string): void {
    const k = utf8(key), v = utf8(value);
    imports.proxy_add_header_map_value(<u32>this.typ, at(k), k.byteLength, at(v), v.byteLength);
  }
  replace(key: string, value: string): void {
    const k = utf8(key), v = utf8(value);
    imports.proxy_replace_header_map_value(<u32>this.typ, at(k), k.byteLength, at(v), v.byteLength);
  }
  remove(key: string): void {
    const k = utf8(key);
    imports.proxy_remove_header_map_value(<u32>this.typ, at(k), k.byteLength);
  }
  get_headers(): Headers {
    return get_header_map_pairs(this.typ);
  }
  set_headers(headers: Headers): void {
    set_header_map_pairs(this.typ, headers);
  }
}

export class HeaderStreamManipulator {
  constructor(
    public request: HeaderMapManipulator,
    public response: HeaderMapManipulator,
    public http_callback: HeaderMapManipulator,
  ) {}
}

export class StreamContext {
  constructor(public headers: HeaderStreamManipulator, public trailers: HeaderStreamManipulator) {}
}

// Headers and trailers of the request being processed, of its response, and of the answer
// to an http call (inside its callback).
export const stream_context = new StreamContext(
  new HeaderStreamManipulator(
    new HeaderMapManipulator(HeaderMapTypeValues.RequestHeaders),
    new HeaderMapManipulator(HeaderMapTypeValues.ResponseHeaders),
    new HeaderMapManipulator(HeaderMapTypeValues.HttpCallResponseHeaders),
  ),
  new HeaderStreamManipulator(
    new HeaderMapManipulator(HeaderMapTypeValues.RequestTrailers),
    new HeaderMapManipulator(HeaderMapTypeValues.ResponseTrailers),
    new HeaderMapManipulator(HeaderMapTypeValues.HttpCallResponseTrailers),
  ),
);

export function continue_request(): WasmResultValues {
  return <WasmResultValues>imports.proxy_continue_stream(StreamTypeValues.Request);
}

export function continue_response(): WasmResultValues {
  return <WasmResultValues>imports.proxy_continue_stream(StreamTypeValues.Response);
}

// Answers the request from the filter. The answer still passes this filter's response
// callbacks, as in Envoy.
export function send_local_response(status: u32, details: string, body: ArrayBuffer,
  headers: Headers, grpc_status: GrpcStatusValues): WasmResultValues {
  const d = utf8(details);
  const h = serializeHeaders(headers);
  return <WasmResultValues>imports.proxy_send_local_response(status, at(d), d.byteLength,
    at(body), body.byteLength, at(h), h.byteLength, <i32>grpc_status);
}

export class SharedData {
  constructor(public result: WasmResultValues, public value: ArrayBuffer, public cas: u32) {}
}

// Reads a key shared by every VM with the same vm_id, across all workers.
export function get_shared_data(key: string): SharedData {
  const k = utf8(key);
  clearSlots();
  const result = <WasmResultValues>imports.proxy_get_shared_data(at(k), k.byteLength, SLOTS, SLOTS + 4, SLOTS + 8);
  if (result != WasmResultValues.Ok) return new SharedData(result, new ArrayBuffer(0), 0);
  const cas = load<u32>(SLOTS + 8);
  return new SharedData(result, takeReturned(), cas);
}

// Writes key; with cas != 0 it answers CasMismatch if another writer got there first.
export function set_shared_data(key: string, value: ArrayBuffer, cas: u32 = 0): WasmResultValues {
  const k = utf8(key);
  return <WasmResultValues>imports.proxy_set_shared_data(at(k), k.byteLength, at(value), value.byteLength, cas);
}

export class QueueResult {
  constructor(public result: WasmResultValues, public queue_id: u32) {}
}

export function register_shared_queue(name: string): QueueResult {
  const n = utf8(name);
  const result = <WasmResultValues>imports.proxy_register_shared_queue(at(n), n.byteLength, SLOTS);
  return new QueueResult(result, load<u32>(SLOTS));
}

export function resolve_shared_queue(vm_id: string, name: string): QueueResult {
  const v = utf8(vm_id), n = utf8(name);
  const result = <WasmResultValues>imports.proxy_resolve_shared_queue(at(v), v.byteLength, at(n), n.byteLength, SLOTS);
  return new QueueResult(result, load<u32>(SLOTS));
}

export function enqueue_shared_queue(queue_id: u32, data: ArrayBuffer): WasmResultValues {
  return <WasmResultValues>imports.proxy_enqueue_shared_queue(queue_id, at(data), data.byteLength);
}

export class DequeueResult {
  constructor(public result: WasmResultValues, public data: ArrayBuffer) {}
}

export function dequeue_shared_queue(queue_id: u32): DequeueResult {
  clearSlots();
  const result = <WasmResultValues>imports.proxy_dequeue_shared_queue(queue_id, SLOTS, SLOTS + 4);
  return new DequeueResult(result, result == WasmResultValues.Ok ? takeReturned() : new ArrayBuffer(0));
}

export function call_foreign_function(name: string, args: ArrayBuffer): ArrayBuffer {
  const n = utf8(name);
  clearSlots();
  if (imports.proxy_call_foreign_function(at(n), n.byteLength, at(args), args.byteLength, SLOTS, SLOTS + 4) != WasmResultValues.Ok) {
    return new ArrayBuffer(0);
  }
  return takeReturned();
}

// ---- metrics (on the admin /metrics as rustygate_filter_<name>{filter="..."}) ----

export class Metric {
  metric_id: u32;
  constructor(typ: MetricTypeValues, name: string) {
    const n = utf8(name);
    imports.proxy_define_metric(<u32>typ, at(n), n.byteLength, SLOTS);
    this.metric_id = load<u32>(SLOTS);
  }
  get(): u64 {
    imports.proxy_get_metric(this.metric_id, SLOTS);
    return load<u64>(SLOTS);
  }
}

export class Counter extends Metric {
  constructor(name: string) { super(MetricTypeValues.Counter, name); }
  increment(offset: u32): WasmResultValues {
    return <WasmResultValues>imports.proxy_increment_metric(this.metric_id, <i64>offset);
  }
}

export class Gauge extends Metric {
  constructor(name: string) { super(MetricTypeValues.Gauge, name); }
  increment(offset: i64): WasmResultValues {
    return <WasmResultValues>imports.proxy_increment_metric(this.metric_id, offset);
  }
  record(value: u64): WasmResultValues {
    return <WasmResultValues>imports.proxy_record_metric(this.metric_id, value);
  }
}

export class Histogram extends Metric {
  constructor(name: string) { super(MetricTypeValues.Histogram, name); }
  record(value: u64): WasmResultValues {
    return <WasmResultValues>imports.proxy_record_metric(this.metric_id, value);
  }
}

export function proxy_set_effective_context(context_id: u32): WasmResultValues {
  return <WasmResultValues>imports.proxy_set_effective_context(context_id);
}

// ---- contexts ----

export abstract class BaseContext {
  constructor(public context_id: u32) {}
  onDone(): bool { return true; }
  onDelete(): void {}
  // A gRPC stream this context opened (RootContext.grpcStream), in order: its initial
  // metadata (get_header_map_pairs(GrpcReceiveInitialMetadata)), each message
  // (get_buffer_bytes(GrpcReceiveBuffer, ...)), its trailing metadata, its close.
  onGrpcStreamInitialMetadata(token: u32, elements: u32): void {}
  onGrpcStreamMessage(token: u32, size: u32): void {}
  onGrpcStreamTrailingMetadata(token: u32, elements: u32): void {}
  onGrpcStreamClose(token: u32, status: u32): void {}
}

// A unary gRPC call's callback: status 0 with the reply's size
// (get_buffer_bytes(GrpcReceiveBuffer, ...)), or the failure's status (get_grpc_status()).
export class GrpcCallback {
  constructor(
    public origin_context: BaseContext,
    public cb: ((origin_context: Context, status: u32, size: u32) => void) | null,
  ) {}
}

// The status and message of the gRPC call whose close is being delivered.
export class GrpcStatus {
  constructor(public code: u32, public message: string) {}
}

export function get_grpc_status(): GrpcStatus {
  clearSlots();
  imports.proxy_get_status(SLOTS + 8, SLOTS, SLOTS + 4);
  const code = load<u32>(SLOTS + 8);
  return new GrpcStatus(code, String.UTF8.decode(takeReturned()));
}

// Sends one message on a stream; end_stream half-closes after it.
export function grpc_send(token: u32, message: ArrayBuffer, end_stream: bool): WasmResultValues {
  return <WasmResultValues>imports.proxy_grpc_send(token, at(message), message.byteLength, end_stream ? 1 : 0);
}

// Half-closes a stream: the server's messages and status still arrive.
export function grpc_close(token: u32): WasmResultValues {
  return <WasmResultValues>imports.proxy_grpc_close(token);
}

// AssemblyScript has no closures, so an http call's callback is a plain function that gets
// the context that made the call.
export class HttpCallback {
  constructor(
    public origin_context: BaseContext,
    public cb: (origin_context: Context, headers: u32, body_size: usize, trailers: u32) => void,
  ) {}
}

export class GrpcStreamResult {
  constructor(public result: WasmResultValues, public token: u32) {}
}

// A filter's plugin-wide state, one per filter instance in each worker's VM.
export class RootContext extends BaseContext {
  configuration: string = "";
  http_calls: Map<u32, HttpCallback> = new Map();
  grpc_calls: Map<u32, GrpcCallback> = new Map();

  getConfiguration(): string { return this.configuration; }

  // Override to make a context per request; the default lets requests pass.
  createContext(context_id: u32): Context { return new Context(context_id, this); }

  validateConfiguration(configuration_size: usize): bool { return true; }

  // Reads the configuration into getConfiguration(); override to parse it (call super first).
  onConfigure(configuration_size: u32): bool {
    this.configuration = String.UTF8.decode(
      get_buffer_bytes(BufferTypeValues.PluginConfiguration, 0, configuration_size));
    return true;
  }

  onStart(vm_configuration_size: usize): bool { return true; }
  onTick(): void {}
  onQueueReady(queue_id: u32): void {}

  // Completes a retirement deferred by onDone() returning false.
  done(): void { imports.proxy_done(); }

  // Sends a request to the configured cluster `cluster`; headers need :method, :path and
  // :authority. cb runs with origin_context current when the answer comes (headers == 0
  // when the call failed).
  httpCall(cluster: string, headers: Headers, body: ArrayBuffer, trailers: Headers,
    timeout_milliseconds: u32, origin_context: BaseContext,
    cb: (origin_context: Context, headers: u32, body_size: usize, trailers: u32) => void): WasmResultValues {
    const c = utf8(cluster);
    const h = serializeHeaders(headers), t = serializeHeaders(trailers);
    const result = <WasmResultValues>imports.proxy_http_call(at(c), c.byteLength, at(h), h.byteLength,
      at(body), body.byteLength, at(t), t.byteLength, timeout_milliseconds, SLOTS);
    if (result == WasmResultValues.Ok) {
      this.http_calls.set(load<u32>(SLOTS), new HttpCallback(origin_context, cb));
    }
    return result;
  }

  // Calls service/method on the configured cluster `cluster` (which should be
  // `protocol: http2`); cb runs with origin_context current when the call ends.
  grpcCall(cluster: string, service: string, method: string, metadata: Headers,
    message: ArrayBuffer, timeout_milliseconds: u32, origin_context: BaseContext,
    cb: (origin_context: Context, status: u32, size: u32) => void): WasmResultValues {
    const c = utf8(cluster), s = utf8(service), m = utf8(method);
    const md = serializeHeaders(metadata);
    const result = <WasmResultValues>imports.proxy_grpc_call(at(c), c.byteLength, at(s), s.byteLength,
      at(m), m.byteLength, at(md), md.byteLength, at(message), message.byteLength,
      timeout_milliseconds, SLOTS);
    if (result == WasmResultValues.Ok) {
      this.grpc_calls.set(load<u32>(SLOTS), new GrpcCallback(origin_context, cb));
    }
    return result;
  }

  // Opens a stream to service/method; its events go to origin_context's onGrpcStream*
  // methods. The token (for grpc_send, grpc_close, grpcCancel) is in `token` when Ok.
  grpcStream(cluster: string, service: string, method: string, metadata: Headers,
    origin_context: BaseContext): GrpcStreamResult {
    const c = utf8(cluster), s = utf8(service), m = utf8(method);
    const md = serializeHeaders(metadata);
    const result = <WasmResultValues>imports.proxy_grpc_stream(at(c), c.byteLength, at(s), s.byteLength,
      at(m), m.byteLength, at(md), md.byteLength, SLOTS);
    const token = load<u32>(SLOTS);
    if (result == WasmResultValues.Ok) this.grpc_calls.set(token, new GrpcCallback(origin_context, null));
    return new GrpcStreamResult(result, token);
  }

  // Ends a call or stream at once; no callback for it follows.
  grpcCancel(token: u32): WasmResultValues {
    this.grpc_calls.delete(token);
    return <WasmResultValues>imports.proxy_grpc_cancel(token);
  }

  // Delivers a gRPC event to the context that made the call; kind: 0 initial metadata,
  // 1 message, 2 trailing metadata, 3 close.
  onGrpcEvent(token: u32, kind: u32, n: u32): void {
    if (!this.grpc_calls.has(token)) return;
    const call = this.grpc_calls.get(token);
    const unary = call.cb != null;
    if (kind == 3 || (unary && kind == 1)) this.grpc_calls.delete(token);
    if (unary && (kind == 0 || kind == 2)) return;
    const origin = call.origin_context;
    if (origin.context_id != this.context_id) {
      if (!contexts.has(origin.context_id)) return;
      proxy_set_effective_context(origin.context_id);
    }
    if (unary) {
      const cb = call.cb!;
      if (kind == 1) cb(changetype<Context>(origin), 0, n);
      else cb(changetype<Context>(origin), n, 0);
    } else if (kind == 0) origin.onGrpcStreamInitialMetadata(token, n);
    else if (kind == 1) origin.onGrpcStreamMessage(token, n);
    else if (kind == 2) origin.onGrpcStreamTrailingMetadata(token, n);
    else origin.onGrpcStreamClose(token, n);
  }

  onHttpCallResponse(token: u32, headers: u32, body_size: u32, trailers: u32): void {
    if (!this.http_calls.has(token)) return;
    const call = this.http_calls.get(token);
    this.http_calls.delete(token);
    const origin = call.origin_context;
    if (origin.context_id != this.context_id) {
      // The request may have ended before the answer came.
      if (!contexts.has(origin.context_id)) return;
      proxy_set_effective_context(origin.context_id);
    }
    call.cb(changetype<Context>(origin), headers, body_size, trailers);
  }
}

// One request's state. Callbacks run in the order the request flows, then onLog.
export class Context extends BaseContext {
  constructor(context_id: u32, public root_context: RootContext) {
    super(context_id);
  }
  onRequestHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    return FilterHeadersStatusValues.Continue;
  }
  onRequestBody(body_buffer_length: usize, end_of_stream: bool): FilterDataStatusValues {
    return FilterDataStatusValues.Continue;
  }
  onRequestTrailers(trailers: u32): FilterTrailersStatusValues {
    return FilterTrailersStatusValues.Continue;
  }
  onResponseHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    return FilterHeadersStatusValues.Continue;
  }
  onResponseBody(body_buffer_length: usize, end_of_stream: bool): FilterDataStatusValues {
    return FilterDataStatusValues.Continue;
  }
  onResponseTrailers(trailers: u32): FilterTrailersStatusValues {
    return FilterTrailersStatusValues.Continue;
  }
  onLog(): void {}
  setEffectiveContext(): WasmResultValues {
    return proxy_set_effective_context(this.context_id);
  }
}

// ---- registry ----

const factories = new Map<string, (context_id: u32) => RootContext>();
export const contexts = new Map<u32, BaseContext>();

// Registers the root context factory under `name` (the filter's root_id). A module with one
// registration serves any root_id; with several, the host's plugin_root_id picks.
export function registerRootContext(factory: (context_id: u32) => RootContext, name: string): void {
  factories.set(name, factory);
}

export function createRootContext(context_id: u32): void {
  let factory: (context_id: u32) => RootContext;
  if (factories.size == 1) {
    factory = factories.values()[0];
  } else {
    const name = String.UTF8.decode(get_property("plugin_root_id"));
    if (!factories.has(name)) {
      log(LogLevelValues.critical, "no root context registered for root_id \"" + name + "\"");
      unreachable();
    }
    factory = factories.get(name);
  }
  contexts.set(context_id, factory(context_id));
}

export function createContext(context_id: u32, root_id: u32): void {
  const root = getRootContext(root_id);
  contexts.set(context_id, root.createContext(context_id));
}

export function getRootContext(context_id: u32): RootContext {
  return changetype<RootContext>(contexts.get(context_id));
}

export function getContext(context_id: u32): Context {
  return changetype<Context>(contexts.get(context_id));
}

// Where `--use abort=...` points: a failed assertion or a thrown error is logged with its
// place, then the module traps, which fails the request by the filter's failure policy.
export function abort_handler(message: string | null, file: string | null, line: u32, column: u32): void {
  const where = (file ? file : "?") + ":" + line.toString() + ":" + column.toString();
  log(LogLevelValues.critical, "abort: " + (message ? message : "") + " at " + where);
  unreachable();
}
