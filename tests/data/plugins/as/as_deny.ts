/*
 * as_deny: AssemblyScript (@solo-io/proxy-runtime 0.1.8) local reply.
 *
 * Root id: registered under both "" and "as_deny". No configuration.
 * proxy_on_request_headers: if request header "x-deny" has a non-empty value V (the SDK cannot
 *   tell an absent header from an empty one), calls proxy_send_local_response(403, "as_denied",
 *   body "denied by as_deny: V\n", headers [("x-denied-by", "as_deny")], grpc_status -1) and
 *   returns StopIteration (1); otherwise adds request header "x-as-deny: allowed" and Continue.
 * Module facts: marker proxy_abi_version_0_2_0, allocator malloc, imports wasi_unstable.proc_exit.
 */
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context,
  HeaderPair, Headers, send_local_response, GrpcStatusValues,
} from "@solo-io/proxy-runtime";

class DenyRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new Deny(context_id, this);
  }

  onConfigure(configuration_size: u32): bool {
    return true;
  }
}

class Deny extends Context {
  constructor(context_id: u32, root: DenyRoot) {
    super(context_id, root);
  }

  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const value = stream_context.headers.request.get("x-deny");
    if (value.length == 0) {
      stream_context.headers.request.add("x-as-deny", "allowed");
      return FilterHeadersStatusValues.Continue;
    }
    const headers: Headers = [];
    headers.push(new HeaderPair(String.UTF8.encode("x-denied-by"), String.UTF8.encode("as_deny")));
    send_local_response(403, "as_denied", String.UTF8.encode("denied by as_deny: " + value + "\n"), headers,
      GrpcStatusValues.InvalidCode);
    return FilterHeadersStatusValues.StopIteration;
  }
}

registerRootContext((context_id: u32) => { return new DenyRoot(context_id); }, "");
registerRootContext((context_id: u32) => { return new DenyRoot(context_id); }, "as_deny");
