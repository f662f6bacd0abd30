"""When to renew a certificate and how long to wait after a failure (pure arithmetic).

Renew at ``fraction`` (default half) of the lifetime left when the certificate arrived,
spread by ``jitter`` so a fleet issued at once does not renew at once; after a failure wait
``initial_backoff * 2**attempt`` (capped, with full jitter), but never past the point where
the current certificate would expire without another try.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RenewalPolicy:
    fraction: float = 0.5
    jitter: float = 0.1  # +- this share of the lifetime
    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    min_delay: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.fraction < 1:
            raise ValueError("fraction must be between 0 and 1")
        if not 0 <= self.jitter < min(self.fraction, 1 - self.fraction):
            raise ValueError("jitter must leave the renewal time strictly inside the lifetime")
        if self.initial_backoff <= 0 or self.max_backoff < self.initial_backoff:
            raise ValueError("need 0 < initial_backoff <= max_backoff")

    def renew_delay(self, received_at: float, not_after: float, rand: float) -> float:
        """Seconds from ``received_at`` until renewal; ``rand`` is uniform in [0, 1)."""
        lifetime = max(0.0, not_after - received_at)
        share = self.fraction + self.jitter * (2 * rand - 1)
        return max(self.min_delay, lifetime * share)

    def retry_delay(self, attempt: int, rand: float, *, until_expiry: float | None = None) -> float:
        """Seconds before retry number ``attempt`` (0-based) after a failed request."""
        ceiling = min(self.max_backoff, self.initial_backoff * (2 ** min(attempt, 30)))
        delay = max(self.min_delay, ceiling * (0.5 + rand / 2))
        if until_expiry is not None and until_expiry > 0:
            delay = min(delay, max(self.min_delay, until_expiry / 4))
        return delay
