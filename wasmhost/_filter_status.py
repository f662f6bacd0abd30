"""Envoy's filter statuses as the streams return them, and the body verdict.

The embedder reads these numbers exactly as Envoy's filter manager reads
``FilterHeadersStatus`` / ``FilterDataStatus`` / ``FilterTrailersStatus``.
"""

from __future__ import annotations

from dataclasses import dataclass

# Envoy filter statuses returned to the embedder
HEADERS_CONTINUE = 0
HEADERS_STOP_ITERATION = 1
HEADERS_CONTINUE_AND_END_STREAM = 2
HEADERS_STOP_ALL_BUFFER = 3
HEADERS_STOP_ALL_WATERMARK = 4
DATA_CONTINUE = 0
DATA_STOP_BUFFER = 1
DATA_STOP_WATERMARK = 2
DATA_STOP_NO_BUFFER = 3
TRAILERS_CONTINUE = 0
TRAILERS_STOP = 1


@dataclass(slots=True)
class BodyVerdict:
    """What to do with body bytes: ``status`` (Envoy FilterDataStatus) and what to send on now."""

    status: int
    forward: bytes | None = None
