/*
 * as_http_call: AssemblyScript (@solo-io/proxy-runtime 0.1.8) authorisation callout.
 *
 * Root id: registered under both "" and "as_http_call".
 * Plugin configuration: the upstream (cluster) name, read through proxy_get_buffer_bytes(
 * PLUGIN_CONFIGURATION); empty configuration means "auth". on_configure returns true.
 * proxy_on_request_headers: proxy_http_call(cluster, headers [(":method","GET"),
 *   (":path","/auth"), (":authority", cluster), ("x-as-original-path", <request :path>)], empty
 *   body, no trailers, timeout 5000 ms) and returns StopIteration (1). If the dispatch status is
 *   not OK: proxy_send_local_response(500, "as_callout_dispatch_failed", body
 *   "dispatch failed\n", no headers, -1) and StopIteration.
 * proxy_on_http_call_response (the SDK sets the effective context to the stream first):
 *   - no response headers (failure): local response 503, details "as_callout_failed", body
 *     "callout failed\n", header ("x-as-callout", "failed");
 *   - callout ":status" is "200": adds request header "x-as-callout: ok" and resumes the request
 *     with proxy_continue_stream(HTTP_REQUEST);
 *   - any other ":status" S: local response 403, details "as_callout_denied", body
 *     "denied by callout: S\n", header ("x-as-callout", "denied").
 * Module facts: marker proxy_abi_version_0_2_0, allocator malloc, imports wasi_unstable.proc_exit.
 */
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context,
  HeaderPair, Headers, send_local_response, continue_request, WasmResultValues, GrpcStatusValues,
} from "@solo-io/proxy-runtime";
import { get_buffer_bytes, BufferTypeValues } from "@solo-io/proxy-runtime/runtime";

function pair(key: string, value: string): HeaderPair {
  return new HeaderPair(String.UTF8.encode(key), String.UTF8.encode(value));
}

function reply(code: u32, details: string, body: string, header_value: string): void {
  const headers: Headers = [];
  if (header_value.length > 0) {
    headers.push(pair("x-as-callout", header_value));
  }
  send_local_response(code, details, String.UTF8.encode(body), headers, GrpcStatusValues.InvalidCode);
}

function onCalloutDone(origin: Context, headers: u32, body_size: usize, trailers: u32): void {
  if (headers == 0) {
    reply(503, "as_callout_failed", "callout failed\n", "failed");
    return;
  }
  const status = stream_context.headers.http_callback.get(":status");
  if (status == "200") {
    stream_context.headers.request.add("x-as-callout", "ok");
    continue_request();
  } else {
    reply(403, "as_callout_denied", "denied by callout: " + status + "\n", "denied");
  }
}

class CalloutRoot extends RootContext {
  cluster: string = "auth";

  createContext(context_id: u32): Context {
    return new Callout(context_id, this);
  }

  onConfigure(configuration_size: u32): bool {
    const text = String.UTF8.decode(get_buffer_bytes(BufferTypeValues.PluginConfiguration, 0, configuration_size));
    if (text.length > 0) {
      this.cluster = text;
    } else {
      this.cluster = "auth";
    }
    return true;
  }
}

class Callout extends Context {
  root: CalloutRoot;

  constructor(context_id: u32, root: CalloutRoot) {
    super(context_id, root);
    this.root = root;
  }

  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const cluster = this.root.cluster;
    const headers: Headers = [];
    headers.push(pair(":method", "GET"));
    headers.push(pair(":path", "/auth"));
    headers.push(pair(":authority", cluster));
    headers.push(pair("x-as-original-path", stream_context.headers.request.get(":path")));
    const result = this.root.httpCall(cluster, headers, new ArrayBuffer(0), [], 5000, this, onCalloutDone);
    if (result != WasmResultValues.Ok) {
      reply(500, "as_callout_dispatch_failed", "dispatch failed\n", "");
    }
    return FilterHeadersStatusValues.StopIteration;
  }
}

registerRootContext((context_id: u32) => { return new CalloutRoot(context_id); }, "");
registerRootContext((context_id: u32) => { return new CalloutRoot(context_id); }, "as_http_call");
