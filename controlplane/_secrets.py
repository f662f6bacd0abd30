"""Image pull secrets for WasmPlugin `imagePullSecret`: Kubernetes Secrets of type
`kubernetes.io/dockerconfigjson`, read from the folder or the cluster.

istiod sends the Secret's docker config JSON in the plugin's ECDS environment (the sidecar's
module agent strips it before the module sees it); an unknown Secret yields an empty value,
as istiod does. Secret contents never appear in the operator API's listings.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Any

from controlplane._resources import DEFAULT_NAMESPACE, Origin, Resource

SECRET_KIND = "Secret"
DOCKER_CONFIG_TYPE = "kubernetes.io/dockerconfigjson"
DOCKER_CONFIG_KEY = ".dockerconfigjson"


class SecretError(ValueError):
    """A pull secret that cannot be used; the message names the field."""


def is_secret(body: Any) -> bool:
    return isinstance(body, Mapping) and body.get("kind") == SECRET_KIND and body.get("apiVersion") == "v1"


def pull_secret(body: Mapping[str, Any], origin: Origin, default_namespace: str = DEFAULT_NAMESPACE) -> Resource | None:
    """The docker config of a dockerconfigjson Secret as a Resource; None for other Secret types."""
    if body.get("type") != DOCKER_CONFIG_TYPE:
        return None
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, Mapping) or not metadata.get("name"):
        raise SecretError("metadata.name is required")
    text = ((body.get("stringData") or {}).get(DOCKER_CONFIG_KEY))
    if text is None:
        encoded = (body.get("data") or {}).get(DOCKER_CONFIG_KEY)
        if encoded is None:
            raise SecretError(f"data.{DOCKER_CONFIG_KEY} is required")
        try:
            text = base64.b64decode(str(encoded), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise SecretError(f"data.{DOCKER_CONFIG_KEY}: not base64 of UTF-8 text") from None
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        raise SecretError(f"{DOCKER_CONFIG_KEY}: not JSON: {err}") from None
    return Resource(kind=SECRET_KIND, api_version="v1", name=str(metadata["name"]),
                    namespace=str(metadata.get("namespace") or default_namespace), spec={"dockerconfigjson": text},
                    origin=origin)


def pull_secrets(resources: Iterable[Resource]) -> dict[str, str]:
    """`namespace/name` → docker config JSON, for every pull secret among `resources`."""
    return {f"{r.namespace}/{r.name}": str(r.spec["dockerconfigjson"]) for r in resources if r.kind == SECRET_KIND}


__all__ = ["DOCKER_CONFIG_TYPE", "SECRET_KIND", "SecretError", "is_secret", "pull_secret", "pull_secrets"]
