"""sdk.jsonvalue in CPython: it agrees with the json module on valid documents and
rejects malformed ones with JsonError."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sdk.jsonvalue import JsonError, JsonValue, parse_json


def to_python(value: JsonValue) -> Any:
    if value.kind == "object":
        return {k: to_python(value.get(k)) for k in value.keys()}
    if value.kind == "array":
        return [to_python(v) for v in value.as_list()]
    if value.kind == "string":
        return value.as_str()
    if value.kind == "bool":
        return value.as_bool()
    if value.kind == "number":
        return json.loads(value.text)
    return None


DOCUMENTS = [
    '{"a": 1, "b": [true, false, null], "c": {"d": "e"}}',
    '[1, -2, 3.5, 1e3, -0.25E-2]',
    '"plain"',
    '"esc \\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0041 \\u00e9 \\ud83d\\ude00"',
    '  {"nested": [[[[]]]], "empty": {}}  ',
    '{"dup": 1, "dup": 2}',
    '"caf\u00e9 \u65e5\u672c"',
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_agrees_with_the_json_module(document: str) -> None:
    assert to_python(parse_json(document.encode())) == json.loads(document)


@pytest.mark.parametrize("document", ["", "{", "[1,]", '{"a" 1}', "tru", "[1] x", '"open', '{"a": "\\q"}', "[", "-", '"\x01"'])
def test_malformed_documents_raise(document: str) -> None:
    with pytest.raises(JsonError, match="invalid JSON at offset"):
        parse_json(document.encode())


def test_accessors_default_instead_of_raising() -> None:
    config = parse_json(b'{"n": 5, "s": "x", "f": 1.5, "l": ["a", 1, "b"]}')
    assert config.get("n").as_int() == 5
    assert config.get("n").as_str("d") == "d"
    assert config.get("f").as_int(-1) == -1
    assert config.get("missing").get("deeper").is_null()
    assert config.get("l").as_str_list() == ["a", "b"]
    assert config.get("l").at(-1).as_str() == "b"
    assert config.get("l").at(5).is_null()
    assert config.size() == 4 and config.has("s") and not config.has("z")


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(JsonError, match="nested too deeply"):
        parse_json(b"[" * 100 + b"]" * 100)
