"""The mesh console on the control plane's monitoring port (``/dashboard/``, ``wasmesh dashboard``).

Where it sits: beside the operator API (``controlplane._api`` hands ``/dashboard`` requests
here). The control plane scrapes each proxy's ``/stats/prometheus`` (``_console``), the
sans-io model (``_model``) turns Istio's standard metrics and wasmesh's plugin metrics into
a service graph and a per-plugin view, and a plain HTML/CSS/JS page (``static/``, no
external assets) draws the graph as SVG with its own layered layout, updating every few
seconds, next to proxy sync state (versions, NACKs) and config validation messages.
"""

from controlplane.dashboard._console import Console, console_for, is_console_path, respond, serve
from controlplane.dashboard._model import Sample, plugin_view, quantile, service_graph

__all__ = ["Console", "Sample", "console_for", "is_console_path", "plugin_view", "quantile", "respond", "serve",
           "service_graph"]
