// api-key: rejects requests without a known API key and stamps a configured header on every
// response. The same filter exists in Rust and Go beside this directory; all three behave
// identically.
export * from "@rustygate/proxy-wasm/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context,
  send_local_response, makeHeaderPair, GrpcStatusValues, log, LogLevelValues, parseJSON,
} from "@rustygate/proxy-wasm";

const FIELDS = ["header_name", "header_value", "api_keys"];

class ApiKeyRoot extends RootContext {
  headerName: string = "";
  headerValue: string = "";
  keys: Set<string> = new Set();

  onConfigure(size: u32): bool {
    super.onConfigure(size);
    const parsed = parseJSON(this.getConfiguration());
    if (!parsed.ok) return this.refuse("invalid configuration: " + parsed.error);
    const config = parsed.value!;
    if (!config.isObject()) return this.refuse("invalid configuration: expected an object");
    for (let i = 0; i < config.keys.length; i++) {
      if (!FIELDS.includes(config.keys[i])) return this.refuse("configuration: unknown field " + config.keys[i]);
    }
    const name = config.get("header_name");
    if (!name.isString() || name.string.length == 0) return this.refuse("configuration: header_name is required");
    this.headerName = name.string;
    this.headerValue = config.get("header_value").string;
    const keys = config.get("api_keys");
    if (!keys.isArray() || keys.items.length == 0) return this.refuse("configuration: api_keys must list at least one key");
    for (let i = 0; i < keys.items.length; i++) this.keys.add(keys.items[i].string);
    return true;
  }

  refuse(why: string): bool {
    log(LogLevelValues.error, "api-key: " + why);
    return false;
  }

  createContext(context_id: u32): Context {
    return new ApiKey(context_id, this);
  }
}

class ApiKey extends Context {
  onRequestHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const root = this.root_context as ApiKeyRoot;
    const key = stream_context.headers.request.get("x-api-key");
    if (key.length == 0) return reject(401, "missing API key");
    if (!root.keys.has(key)) return reject(403, "invalid API key");
    // The key is for the gateway, not the upstream.
    stream_context.headers.request.remove("x-api-key");
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const root = this.root_context as ApiKeyRoot;
    stream_context.headers.response.add(root.headerName, root.headerValue);
    return FilterHeadersStatusValues.Continue;
  }
}

function reject(status: u32, reason: string): FilterHeadersStatusValues {
  const body = String.UTF8.encode("{\"error\":\"" + reason + "\"}");
  send_local_response(status, "api_key", body,
    [makeHeaderPair("content-type", "application/json"), makeHeaderPair("www-authenticate", "ApiKey")],
    GrpcStatusValues.InvalidCode);
  return FilterHeadersStatusValues.StopIteration;
}

registerRootContext((context_id: u32): RootContext => new ApiKeyRoot(context_id), "api-key");
