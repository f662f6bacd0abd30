"""Foreign functions (proxy_call_foreign_function) and the ones Envoy registers."""
