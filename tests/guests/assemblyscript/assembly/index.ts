// as-probe: a proxy-wasm test filter in AssemblyScript on @solo-io/proxy-runtime, built from
// source by the test build. It asks the `auth` cluster about every request (an http_call owned
// by its root context, answered to that root), and answers /as-teapot itself.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context,
  send_local_response, continue_request, Headers, HeaderPair, GrpcStatusValues,
} from "@solo-io/proxy-runtime";

function pair(key: string, value: string): HeaderPair {
  return new HeaderPair(String.UTF8.encode(key), String.UTF8.encode(value));
}

class GuardRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new Guard(context_id, this);
  }
}

// Runs with the stream as the effective context (the runtime switches to it).
function onAuthAnswer(origin: Context, headers: u32, body_size: usize, trailers: u32): void {
  const status = stream_context.headers.http_callback.get(":status");
  if (status == "200") {
    stream_context.headers.request.add("x-as-user", "approved");
    continue_request();
  } else {
    const extra: Headers = [pair("x-as-status", status)];
    send_local_response(403, "as_denied", String.UTF8.encode("denied by as-probe\n"), extra, GrpcStatusValues.Unknown);
  }
}

class Guard extends Context {
  constructor(context_id: u32, root: GuardRoot) {
    super(context_id, root);
  }

  onRequestHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    if (stream_context.headers.request.get(":path") == "/as-teapot") {
      const extra: Headers = [pair("x-as-teapot", "yes")];
      send_local_response(418, "as_teapot", String.UTF8.encode("short and stout\n"), extra, GrpcStatusValues.Unknown);
      return FilterHeadersStatusValues.StopIteration;
    }
    const call: Headers = [
      pair(":method", "GET"),
      pair(":path", "/check"),
      pair(":authority", "auth"),
      pair("x-user", stream_context.headers.request.get("x-user")),
    ];
    this.root_context.httpCall("auth", call, new ArrayBuffer(0), [], 2000, this, onAuthAnswer);
    return FilterHeadersStatusValues.StopIteration;
  }

  onResponseHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("x-as-probe", "seen");
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => {
  return new GuardRoot(context_id);
}, "as_guard");
