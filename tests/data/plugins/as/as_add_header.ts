/*
 * as_add_header: AssemblyScript (@solo-io/proxy-runtime 0.1.8) response header from configuration.
 *
 * Root id: the root context factory is registered under both "" and "as_add_header", so the
 * host must report plugin_root_id as one of those (the SDK looks it up in on_context_create).
 * Plugin configuration: any text, read in on_configure through proxy_get_buffer_bytes(
 * PLUGIN_CONFIGURATION, 0, size) (the SDK's default on_configure passes the size where a pointer
 * belongs, so this plugin overrides it); on_configure returns true.
 * proxy_on_response_headers: adds response header "x-as-config: <configuration>" when the
 *   configuration is non-empty, else "x-as-config: <empty>"; adds "x-as-sdk: proxy-runtime";
 *   Continue.
 * Module facts: ABI marker proxy_abi_version_0_2_0 (what SDK 0.1.8 emits), allocator malloc
 * (+ free), imports wasi_unstable.proc_exit (abort → proc_exit(255) after a CRITICAL log), and
 * the SDK's debug-level logging through proxy_log in nearly every callback.
 */
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context,
} from "@solo-io/proxy-runtime";
import { get_buffer_bytes, BufferTypeValues } from "@solo-io/proxy-runtime/runtime";

class AddHeaderRoot extends RootContext {
  config: string = "";

  createContext(context_id: u32): Context {
    return new AddHeader(context_id, this);
  }

  onConfigure(configuration_size: u32): bool {
    const bytes = get_buffer_bytes(BufferTypeValues.PluginConfiguration, 0, configuration_size);
    this.config = String.UTF8.decode(bytes);
    return true;
  }
}

class AddHeader extends Context {
  root: AddHeaderRoot;

  constructor(context_id: u32, root: AddHeaderRoot) {
    super(context_id, root);
    this.root = root;
  }

  onResponseHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    let value: string;
    if (this.root.config.length > 0) {
      value = this.root.config;
    } else {
      value = "<empty>";
    }
    stream_context.headers.response.add("x-as-config", value);
    stream_context.headers.response.add("x-as-sdk", "proxy-runtime");
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => { return new AddHeaderRoot(context_id); }, "");
registerRootContext((context_id: u32) => { return new AddHeaderRoot(context_id); }, "as_add_header");
