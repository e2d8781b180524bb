// The proxy-wasm host functions (module "env"). asc keeps only the ones a filter reaches, so a
// filter imports no more than it uses (the host refuses unknown imports at load).

@external("env", "proxy_log")
export declare function proxy_log(level: u32, msg: usize, msg_len: usize): u32;
@external("env", "proxy_get_log_level")
export declare function proxy_get_log_level(ret_level: usize): u32;
@external("env", "proxy_get_current_time_nanoseconds")
export declare function proxy_get_current_time_nanoseconds(ret_time: usize): u32;
@external("env", "proxy_set_tick_period_milliseconds")
export declare function proxy_set_tick_period_milliseconds(period: u32): u32;
@external("env", "proxy_set_effective_context")
export declare function proxy_set_effective_context(context_id: u32): u32;
@external("env", "proxy_done")
export declare function proxy_done(): u32;
@external("env", "proxy_get_property")
export declare function proxy_get_property(path: usize, path_len: usize, ret_ptr: usize, ret_len: usize): u32;
@external("env", "proxy_set_property")
export declare function proxy_set_property(path: usize, path_len: usize, value: usize, value_len: usize): u32;
@external("env", "proxy_get_header_map_pairs")
export declare function proxy_get_header_map_pairs(typ: u32, ret_ptr: usize, ret_len: usize): u32;
@external("env", "proxy_set_header_map_pairs")
export declare function proxy_set_header_map_pairs(typ: u32, ptr: usize, len: usize): u32;
@external("env", "proxy_get_header_map_value")
export declare function proxy_get_header_map_value(typ: u32, key: usize, key_len: usize, ret_ptr: usize, ret_len: usize): u32;
@external("env", "proxy_add_header_map_value")
export declare function proxy_add_header_map_value(typ: u32, key: usize, key_len: usize, value: usize, value_len: usize): u32;
@external("env", "proxy_replace_header_map_value")
export declare function proxy_replace_header_map_value(typ: u32, key: usize, key_len: usize, value: usize, value_len: usize): u32;
@external("env", "proxy_remove_header_map_value")
export declare function proxy_remove_header_map_value(typ: u32, key: usize, key_len: usize): u32;
@external("env", "proxy_get_buffer_bytes")
export declare function proxy_get_buffer_bytes(typ: u32, start: u32, max_size: u32, ret_ptr: usize, ret_len: usize): u32;
@external("env", "proxy_set_buffer_bytes")
export declare function proxy_set_buffer_bytes(typ: u32, start: u32, size: u32, data: usize, data_len: usize): u32;
@external("env", "proxy_continue_stream")
export declare function proxy_continue_stream(stream_type: u32): u32;
@external("env", "proxy_close_stream")
export declare function proxy_close_stream(stream_type: u32): u32;
@external("env", "proxy_send_local_response")
export declare function proxy_send_local_response(status: u32, details: usize, details_len: usize, body: usize, body_len: usize, headers: usize, headers_len: usize, grpc_status: i32): u32;
@external("env", "proxy_http_call")
export declare function proxy_http_call(upstream: usize, upstream_len: usize, headers: usize, headers_len: usize, body: usize, body_len: usize, trailers: usize, trailers_len: usize, timeout_ms: u32, ret_token: usize): u32;
@external("env", "proxy_get_shared_data")
export declare function proxy_get_shared_data(key: usize, key_len: usize, ret_ptr: usize, ret_len: usize, ret_cas: usize): u32;
@external("env", "proxy_set_shared_data")
export declare function proxy_set_shared_data(key: usize, key_len: usize, value: usize, value_len: usize, cas: u32): u32;
@external("env", "proxy_register_shared_queue")
export declare function proxy_register_shared_queue(name: usize, name_len: usize, ret_id: usize): u32;
@external("env", "proxy_resolve_shared_queue")
export declare function proxy_resolve_shared_queue(vm_id: usize, vm_id_len: usize, name: usize, name_len: usize, ret_id: usize): u32;
@external("env", "proxy_enqueue_shared_queue")
export declare function proxy_enqueue_shared_queue(id: u32, value: usize, value_len: usize): u32;
@external("env", "proxy_dequeue_shared_queue")
export declare function proxy_dequeue_shared_queue(id: u32, ret_ptr: usize, ret_len: usize): u32;
@external("env", "proxy_define_metric")
export declare function proxy_define_metric(typ: u32, name: usize, name_len: usize, ret_id: usize): u32;
@external("env", "proxy_increment_metric")
export declare function proxy_increment_metric(id: u32, delta: i64): u32;
@external("env", "proxy_record_metric")
export declare function proxy_record_metric(id: u32, value: u64): u32;
@external("env", "proxy_get_metric")
export declare function proxy_get_metric(id: u32, ret_value: usize): u32;
@external("env", "proxy_call_foreign_function")
export declare function proxy_call_foreign_function(name: usize, name_len: usize, args: usize, args_len: usize, ret_ptr: usize, ret_len: usize): u32;
@external("env", "proxy_grpc_call")
export declare function proxy_grpc_call(upstream: usize, upstream_len: usize, service: usize, service_len: usize, method: usize, method_len: usize, metadata: usize, metadata_len: usize, message: usize, message_len: usize, timeout_ms: u32, ret_token: usize): u32;
@external("env", "proxy_grpc_stream")
export declare function proxy_grpc_stream(upstream: usize, upstream_len: usize, service: usize, service_len: usize, method: usize, method_len: usize, metadata: usize, metadata_len: usize, ret_token: usize): u32;
@external("env", "proxy_grpc_send")
export declare function proxy_grpc_send(token: u32, message: usize, message_len: usize, end_stream: u32): u32;
@external("env", "proxy_grpc_cancel")
export declare function proxy_grpc_cancel(token: u32): u32;
@external("env", "proxy_grpc_close")
export declare function proxy_grpc_close(token: u32): u32;
@external("env", "proxy_get_status")
export declare function proxy_get_status(ret_code: usize, ret_ptr: usize, ret_len: usize): u32;
