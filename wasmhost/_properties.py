"""Properties: the attribute catalogue and Envoy's value encodings."""
