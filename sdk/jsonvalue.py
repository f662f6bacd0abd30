"""A small, typed JSON reader for plugin configuration.

``json.loads`` returns untyped values, which the compiler cannot follow; this reader returns
a ``JsonValue`` with typed accessors instead::

    config = parse_json(proxywasm.get_plugin_configuration())
    header = config.get("header").as_str("x-default")
    for user in config.get("users").as_list():
        ...

Missing keys and wrong kinds give a null value / the default rather than an exception, so
optional settings read naturally; malformed JSON raises ``JsonError`` naming the offset.
Numbers keep their text; ``as_int`` reads integers. Written in the compilable subset, so
the plugin parses its configuration identically in CPython and compiled.
"""

from __future__ import annotations


class JsonError(ValueError):
    """The configuration is not valid JSON."""


class JsonValue:
    """One JSON value. ``kind`` is null, bool, number, string, array or object."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.text = ""
        self.flag = False
        self.items: list[JsonValue] = []
        self.members: dict[str, JsonValue] = {}

    def is_null(self) -> bool:
        return self.kind == "null"

    def get(self, key: str) -> JsonValue:
        """The member ``key`` of an object; a null value if absent or not an object."""
        if self.kind == "object" and key in self.members:
            return self.members[key]
        return JsonValue("null")

    def at(self, index: int) -> JsonValue:
        """Item ``index`` of an array; a null value if out of range or not an array."""
        if self.kind == "array" and -len(self.items) <= index < len(self.items):
            return self.items[index]
        return JsonValue("null")

    def has(self, key: str) -> bool:
        return self.kind == "object" and key in self.members

    def as_str(self, default: str = "") -> str:
        if self.kind == "string":
            return self.text
        return default

    def as_int(self, default: int = 0) -> int:
        if self.kind == "number" and _is_integer(self.text):
            return int(self.text)
        return default

    def as_bool(self, default: bool = False) -> bool:
        if self.kind == "bool":
            return self.flag
        return default

    def as_list(self) -> list[JsonValue]:
        if self.kind == "array":
            return self.items
        return []

    def as_str_list(self) -> list[str]:
        """The string items of an array (other items are skipped)."""
        return [item.text for item in self.as_list() if item.kind == "string"]

    def keys(self) -> list[str]:
        """Member names of an object, in document order."""
        if self.kind == "object":
            return list(self.members.keys())
        return []

    def size(self) -> int:
        if self.kind == "array":
            return len(self.items)
        if self.kind == "object":
            return len(self.members)
        return 0


def _is_integer(text: str) -> bool:
    digits = text[1:] if text.startswith("-") else text
    return len(digits) > 0 and digits.isdigit()


class _Parser:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fail(self, what: str) -> JsonError:
        return JsonError(f"invalid JSON at offset {self.pos}: {what}")

    def skip_space(self) -> None:
        while self.pos < len(self.data) and self.data[self.pos] in (32, 9, 10, 13):
            self.pos += 1

    def peek(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end")
        return self.data[self.pos]

    def expect(self, word: bytes) -> None:
        if self.data[self.pos : self.pos + len(word)] != word:
            raise self.fail(f"expected {word.decode()}")
        self.pos += len(word)

    def value(self, depth: int) -> JsonValue:
        if depth > 64:
            raise self.fail("nested too deeply")
        self.skip_space()
        c = self.peek()
        if c == 123:
            return self.object(depth)
        if c == 91:
            return self.array(depth)
        if c == 34:
            result = JsonValue("string")
            result.text = self.string()
            return result
        if c == 116:
            self.expect(b"true")
            result = JsonValue("bool")
            result.flag = True
            return result
        if c == 102:
            self.expect(b"false")
            return JsonValue("bool")
        if c == 110:
            self.expect(b"null")
            return JsonValue("null")
        if c == 45 or 48 <= c <= 57:
            return self.number()
        raise self.fail("unexpected character")

    def object(self, depth: int) -> JsonValue:
        result = JsonValue("object")
        self.pos += 1
        self.skip_space()
        if self.peek() == 125:
            self.pos += 1
            return result
        while True:
            self.skip_space()
            if self.peek() != 34:
                raise self.fail("expected a member name")
            key = self.string()
            self.skip_space()
            if self.peek() != 58:
                raise self.fail("expected ':'")
            self.pos += 1
            result.members[key] = self.value(depth + 1)
            self.skip_space()
            c = self.peek()
            self.pos += 1
            if c == 125:
                return result
            if c != 44:
                raise self.fail("expected ',' or '}'")

    def array(self, depth: int) -> JsonValue:
        result = JsonValue("array")
        self.pos += 1
        self.skip_space()
        if self.peek() == 93:
            self.pos += 1
            return result
        while True:
            result.items.append(self.value(depth + 1))
            self.skip_space()
            c = self.peek()
            self.pos += 1
            if c == 93:
                return result
            if c != 44:
                raise self.fail("expected ',' or ']'")

    def number(self) -> JsonValue:
        start = self.pos
        if self.peek() == 45:
            self.pos += 1
        digits = 0
        while self.pos < len(self.data) and (48 <= self.data[self.pos] <= 57 or self.data[self.pos] in (46, 101, 69, 43, 45)):
            self.pos += 1
            digits += 1
        if digits == 0:
            raise self.fail("expected digits")
        result = JsonValue("number")
        result.text = self.data[start : self.pos].decode()
        return result

    def hex4(self) -> int:
        text = self.data[self.pos : self.pos + 4]
        if len(text) != 4:
            raise self.fail("short \\u escape")
        value = 0
        for c in text:
            if 48 <= c <= 57:
                value = value * 16 + c - 48
            elif 97 <= c <= 102:
                value = value * 16 + c - 87
            elif 65 <= c <= 70:
                value = value * 16 + c - 55
            else:
                raise self.fail("bad \\u escape")
        self.pos += 4
        return value

    def string(self) -> str:
        self.pos += 1
        out = ""
        start = self.pos
        while True:
            c = self.peek()
            if c == 34:
                out = out + self.data[start : self.pos].decode("utf-8", "replace")
                self.pos += 1
                return out
            if c < 32:
                raise self.fail("control character in string")
            if c != 92:
                self.pos += 1
                continue
            out = out + self.data[start : self.pos].decode("utf-8", "replace")
            self.pos += 1
            e = self.peek()
            self.pos += 1
            if e == 110:
                out = out + "\n"
            elif e == 116:
                out = out + "\t"
            elif e == 114:
                out = out + "\r"
            elif e == 98:
                out = out + "\b"
            elif e == 102:
                out = out + "\f"
            elif e == 117:
                code = self.hex4()
                if 0xD800 <= code < 0xDC00 and self.data[self.pos : self.pos + 2] == b"\\u":
                    self.pos += 2
                    low = self.hex4()
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                out = out + chr(code)
            elif e in (34, 92, 47):
                out = out + chr(e)
            else:
                raise self.fail("bad escape")
            start = self.pos


def parse_json(data: bytes) -> JsonValue:
    """Parse a whole JSON document (UTF-8 bytes); raises JsonError when it is malformed."""
    parser = _Parser(data)
    result = parser.value(0)
    parser.skip_space()
    if parser.pos != len(data):
        raise parser.fail("trailing data")
    return result


__all__ = ["JsonError", "JsonValue", "parse_json"]
