"""The control plane: Istio resources in, Envoy xDS out; also home of the `wasmesh` CLI."""
