// c-probe: a proxy-wasm test filter in plain C (clang + wasi-libc), built from source by the
// test build. ABI 0.2.1. Its plugin configuration is a plain string (not JSON): the marker it
// appends to every response body.

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define IMPORT(n) __attribute__((import_module("env"), import_name(#n)))
#define EXPORT(n) __attribute__((export_name(#n)))

IMPORT(proxy_log) int32_t proxy_log(uint32_t level, const char *msg, size_t len);
IMPORT(proxy_get_buffer_bytes)
int32_t proxy_get_buffer_bytes(uint32_t kind, size_t start, size_t max, char **ptr, size_t *len);
IMPORT(proxy_get_buffer_status)
int32_t proxy_get_buffer_status(uint32_t kind, size_t *len, uint32_t *flags);
IMPORT(proxy_set_buffer_bytes)
int32_t proxy_set_buffer_bytes(uint32_t kind, size_t start, size_t size, const char *data, size_t len);
IMPORT(proxy_get_header_map_pairs) int32_t proxy_get_header_map_pairs(uint32_t map, char **ptr, size_t *len);
IMPORT(proxy_get_header_map_size) int32_t proxy_get_header_map_size(uint32_t map, size_t *size);
IMPORT(proxy_add_header_map_value)
int32_t proxy_add_header_map_value(uint32_t map, const char *k, size_t kl, const char *v, size_t vl);
IMPORT(proxy_remove_header_map_value) int32_t proxy_remove_header_map_value(uint32_t map, const char *k, size_t kl);
IMPORT(proxy_get_current_time_nanoseconds) int32_t proxy_get_current_time_nanoseconds(uint64_t *ns);

enum { MAP_REQUEST_HEADERS = 0, MAP_REQUEST_TRAILERS = 1, MAP_RESPONSE_HEADERS = 2 };
enum { BUFFER_RESPONSE_BODY = 1, BUFFER_PLUGIN_CONFIGURATION = 7 };

static char *marker = NULL;
static size_t marker_len = 0;

static void log_info(const char *msg) { proxy_log(2, msg, strlen(msg)); }

static void add(uint32_t map, const char *k, const char *v) {
    proxy_add_header_map_value(map, k, strlen(k), v, strlen(v));
}

static uint32_t pair_count(uint32_t map) {
    char *ptr = NULL;
    size_t len = 0;
    if (proxy_get_header_map_pairs(map, &ptr, &len) != 0 || len < 4) return 0;
    uint32_t n;
    memcpy(&n, ptr, 4);
    free(ptr);
    return n;
}

EXPORT(proxy_abi_version_0_2_1) void abi_version(void) {}

EXPORT(proxy_on_memory_allocate) void *on_memory_allocate(size_t n) { return malloc(n ? n : 1); }

EXPORT(proxy_on_context_create) void on_context_create(uint32_t ctx, uint32_t root) {}

EXPORT(proxy_on_vm_start) uint32_t on_vm_start(uint32_t root, uint32_t size) { return 1; }

EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t root, uint32_t size) {
    char *ptr = NULL;
    size_t len = 0;
    if (size > 0 && proxy_get_buffer_bytes(BUFFER_PLUGIN_CONFIGURATION, 0, size, &ptr, &len) == 0) {
        marker = ptr;
        marker_len = len;
    }
    log_info("c-probe configured");
    return 1;
}

EXPORT(proxy_on_request_headers) uint32_t on_request_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
    size_t bytes = 0;
    proxy_get_header_map_size(MAP_REQUEST_HEADERS, &bytes);
    // The callback's count and the serialized map's count agree (pseudo-headers included).
    uint32_t pairs = pair_count(MAP_REQUEST_HEADERS);
    add(MAP_REQUEST_HEADERS, "x-c-headers", (pairs == n && bytes > 0) ? "consistent" : "inconsistent");
    return 0;
}

EXPORT(proxy_on_request_trailers) uint32_t on_request_trailers(uint32_t ctx, uint32_t n) {
    add(MAP_REQUEST_TRAILERS, "x-c-trailer", n == pair_count(MAP_REQUEST_TRAILERS) ? "seen" : "miscounted");
    return 0;
}

EXPORT(proxy_on_response_headers) uint32_t on_response_headers(uint32_t ctx, uint32_t n, uint32_t eos) {
    uint64_t now = 0;
    proxy_get_current_time_nanoseconds(&now);
    add(MAP_RESPONSE_HEADERS, "x-c-clock", now > 1600000000ull * 1000000000ull ? "wall" : "wrong");
    // The body grows: the length the upstream declared is no longer right.
    proxy_remove_header_map_value(MAP_RESPONSE_HEADERS, "content-length", 14);
    return 0;
}

EXPORT(proxy_on_response_body) uint32_t on_response_body(uint32_t ctx, uint32_t size, uint32_t eos) {
    if (!eos || marker_len == 0) return 0;
    size_t held = 0;
    uint32_t flags = 0;
    if (proxy_get_buffer_status(BUFFER_RESPONSE_BODY, &held, &flags) != 0 || held != size) {
        log_info("c-probe: buffer status disagrees with the callback's size");
        return 0;
    }
    proxy_set_buffer_bytes(BUFFER_RESPONSE_BODY, size, 0, marker, marker_len);
    return 0;
}

EXPORT(proxy_on_done) uint32_t on_done(uint32_t ctx) { return 1; }
EXPORT(proxy_on_log) void on_log(uint32_t ctx) {}
EXPORT(proxy_on_delete) void on_delete(uint32_t ctx) {}
