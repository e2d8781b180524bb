// The callbacks the host calls. A filter's entry file re-exports these with
// `export * from "@rustygate/proxy-wasm/proxy"`.
import {
  contexts, createRootContext, createContext, getRootContext, getContext, RootContext,
} from "./runtime";

export function proxy_abi_version_0_2_1(): void {}

// Returned data is written by the host into an ArrayBuffer of exactly `size` bytes, pinned
// until the SDK takes it back (runtime.ts takeReturned). The ABI never asks for zero bytes.
export function proxy_on_memory_allocate(size: usize): usize {
  const ptr = __new(size, idof<ArrayBuffer>());
  __pin(ptr);
  return ptr;
}

export function proxy_on_context_create(context_id: u32, parent_id: u32): void {
  if (parent_id == 0) createRootContext(context_id);
  else createContext(context_id, parent_id);
}

export function proxy_on_vm_start(root_id: u32, vm_configuration_size: u32): bool {
  return getRootContext(root_id).onStart(vm_configuration_size);
}

export function proxy_validate_configuration(root_id: u32, configuration_size: u32): bool {
  return getRootContext(root_id).validateConfiguration(configuration_size);
}

export function proxy_on_configure(root_id: u32, configuration_size: u32): bool {
  return getRootContext(root_id).onConfigure(configuration_size);
}

export function proxy_on_tick(root_id: u32): void {
  getRootContext(root_id).onTick();
}

export function proxy_on_queue_ready(root_id: u32, queue_id: u32): void {
  getRootContext(root_id).onQueueReady(queue_id);
}

export function proxy_on_request_headers(context_id: u32, headers: u32, end_of_stream: u32): u32 {
  return getContext(context_id).onRequestHeaders(headers, end_of_stream != 0);
}

export function proxy_on_request_body(context_id: u32, body_size: u32, end_of_stream: u32): u32 {
  return getContext(context_id).onRequestBody(body_size, end_of_stream != 0);
}

export function proxy_on_request_trailers(context_id: u32, trailers: u32): u32 {
  return getContext(context_id).onRequestTrailers(trailers);
}

export function proxy_on_response_headers(context_id: u32, headers: u32, end_of_stream: u32): u32 {
  return getContext(context_id).onResponseHeaders(headers, end_of_stream != 0);
}

export function proxy_on_response_body(context_id: u32, body_size: u32, end_of_stream: u32): u32 {
  return getContext(context_id).onResponseBody(body_size, end_of_stream != 0);
}

export function proxy_on_response_trailers(context_id: u32, trailers: u32): u32 {
  return getContext(context_id).onResponseTrailers(trailers);
}

// The first argument is the root context that owns the call, as in Envoy.
export function proxy_on_http_call_response(root_id: u32, token: u32, headers: u32, body_size: u32, trailers: u32): void {
  getRootContext(root_id).onHttpCallResponse(token, headers, body_size, trailers);
}

// gRPC events go to the root context that owns the call, as in Envoy.
export function proxy_on_grpc_receive_initial_metadata(root_id: u32, token: u32, elements: u32): void {
  getRootContext(root_id).onGrpcEvent(token, 0, elements);
}

export function proxy_on_grpc_receive(root_id: u32, token: u32, size: u32): void {
  getRootContext(root_id).onGrpcEvent(token, 1, size);
}

export function proxy_on_grpc_receive_trailing_metadata(root_id: u32, token: u32, elements: u32): void {
  getRootContext(root_id).onGrpcEvent(token, 2, elements);
}

export function proxy_on_grpc_close(root_id: u32, token: u32, status: u32): void {
  getRootContext(root_id).onGrpcEvent(token, 3, status);
}

export function proxy_on_log(context_id: u32): void {
  const c = contexts.get(context_id);
  // Never called for roots by Envoy or RustyGate; guard anyway.
  if (!(c instanceof RootContext)) getContext(context_id).onLog();
}

export function proxy_on_done(context_id: u32): bool {
  return contexts.get(context_id).onDone();
}

export function proxy_on_delete(context_id: u32): void {
  if (!contexts.has(context_id)) return;
  contexts.get(context_id).onDelete();
  contexts.delete(context_id);
}
