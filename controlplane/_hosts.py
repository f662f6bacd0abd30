"""Host names as Istio reads them: short names expand in the resource's namespace."""

from __future__ import annotations

DOMAIN_SUFFIX = "svc.cluster.local"


def fqdn(host: str, namespace: str) -> str:
    """`reviews` in namespace `default` is `reviews.default.svc.cluster.local`; dotted names stay."""
    if "." in host or host == "*":
        return host
    return f"{host}.{namespace}.{DOMAIN_SUFFIX}"


def host_matches(pattern: str, host: str) -> bool:
    """Istio host matching: exact, or `*.example.com` covering any name under it, or `*`."""
    if pattern == "*" or pattern == host:
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return False


def short_names(host: str, namespace: str) -> list[str]:
    """Names a client in `namespace` may use for `host` (for virtual host domains)."""
    names = [host]
    suffix = f".{namespace}.{DOMAIN_SUFFIX}"
    if host.endswith(f".{DOMAIN_SUFFIX}"):
        service_ns = host[: -len(DOMAIN_SUFFIX) - 1]  # "reviews.default"
        names.append(service_ns)
        names.append(f"{service_ns}.svc")
        if host.endswith(suffix):
            names.append(host[: -len(suffix)])
    return names


__all__ = ["DOMAIN_SUFFIX", "fqdn", "host_matches", "short_names"]
