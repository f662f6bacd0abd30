"""Errors raised while loading configuration; each names the offending field path."""

from __future__ import annotations


class ConfigError(Exception):
    """A bootstrap (or part of one) cannot be served; ``path`` names the field, ``reason`` says why.

    Paths use Envoy's snake_case field names from the bootstrap root, with list
    indices and map keys, e.g.
    ``static_resources.clusters[2].lb_policy``.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)

    def under(self, prefix: str) -> ConfigError:
        """The same error with ``prefix`` prepended to its path (for nested validators)."""
        if not prefix:
            return self
        path = f"{prefix}.{self.path}" if self.path and not self.path.startswith("[") else prefix + self.path
        return ConfigError(path, self.reason)


def join_path(prefix: str, name: str) -> str:
    """Join a field name (or ``[i]`` index) onto a path."""
    if not prefix:
        return name
    if name.startswith("["):
        return prefix + name
    return f"{prefix}.{name}"
