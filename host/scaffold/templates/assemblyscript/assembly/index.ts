// __NAME__: a proxy-wasm filter in AssemblyScript (RustyGate's SDK). It adds the header named
// in its configuration to every response. Runs in RustyGate and in Envoy.
export * from "@rustygate/proxy-wasm/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context,
  log, LogLevelValues, parseJSON,
} from "@rustygate/proxy-wasm";

class Root extends RootContext {
  headerName: string = "";
  headerValue: string = "";

  // Runs when the gateway (re)loads the filter; false refuses the configuration.
  onConfigure(size: u32): bool {
    super.onConfigure(size);
    const parsed = parseJSON(this.getConfiguration());
    if (!parsed.ok) return refuse("invalid configuration: " + parsed.error);
    const config = parsed.value!;
    for (let i = 0; i < config.keys.length; i++) {
      const key = config.keys[i];
      if (key != "header_name" && key != "header_value") return refuse("configuration: unknown field " + key);
    }
    const name = config.get("header_name");
    if (!name.isString() || name.string.length == 0) return refuse("configuration: header_name is required");
    this.headerName = name.string;
    this.headerValue = config.get("header_value").string;
    return true;
  }

  createContext(context_id: u32): Context {
    return new Request(context_id, this);
  }
}

class Request extends Context {
  onResponseHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const root = this.root_context as Root;
    stream_context.headers.response.add(root.headerName, root.headerValue);
    return FilterHeadersStatusValues.Continue;
  }
}

function refuse(why: string): bool {
  log(LogLevelValues.error, "__NAME__: " + why);
  return false;
}

registerRootContext((context_id: u32): RootContext => new Root(context_id), "__NAME__");
