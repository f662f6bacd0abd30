"""The HTTP filter that stands in for an extension config that was fetched but never accepted.

Envoy's rule for ECDS: a listener waits for its filters' configs; once the control plane has
answered, the listener serves even if the answer was refused, and a filter without a usable
config fails every request with a 500 (response flag ``NFCF``) rather than letting traffic
skip it. A filter that once had a good config keeps that one instead (``_xds_update``).
"""

from __future__ import annotations

from typing import Any

from ._filter_api import HeadersStatus, HttpFilter, ResponseFlag
from ._headers import HeaderMap


class MissingConfigFilter(HttpFilter):
    """Answers 500 with an empty body, as Envoy does for a filter whose config is missing."""

    encodes = False
    __slots__ = ("cb",)

    def __init__(self, callbacks: Any) -> None:
        self.cb = callbacks

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        self.cb.stream_info.add_flag(ResponseFlag.NO_FILTER_CONFIG_FOUND)
        self.cb.send_local_reply(500, b"", details="filter_config_not_found")
        return HeadersStatus.StopIteration


def missing_config_factory(callbacks: Any) -> MissingConfigFilter:
    return MissingConfigFilter(callbacks)


missing_config_factory.filter_class = MissingConfigFilter  # type: ignore[attr-defined]
