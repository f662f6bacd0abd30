"""The SDK's JSON reader, as plugins use it for configuration."""

from sdk.jsonvalue import JsonError, JsonValue, parse_json
from sdk.proxywasm import log_info

CONFIG = b"""
{
  "header": "x-team",
  "limit": 42,
  "negative": -7,
  "ratio": 0.5,
  "enabled": true,
  "disabled": false,
  "nothing": null,
  "users": [{"name": "ann", "key": "k1"}, {"name": "bob", "key": "k2"}],
  "paths": ["/a", "/b", 3],
  "escaped": "tab\\tquote\\" slash\\/ unicode \\u00e9\\u20ac \\ud83d\\ude00",
  "nested": {"deep": {"deeper": [1, [2, [3]]]}}
}
"""


def describe(value: JsonValue) -> str:
    if value.kind == "object":
        return "{" + ",".join([k + ":" + describe(value.get(k)) for k in value.keys()]) + "}"
    if value.kind == "array":
        return "[" + ",".join([describe(item) for item in value.as_list()]) + "]"
    if value.kind == "string":
        return repr(value.as_str())
    if value.kind == "bool":
        return str(value.as_bool())
    return value.text if value.kind == "number" else "null"


def main() -> None:
    config = parse_json(CONFIG)
    log_info(f"{config.get('header').as_str()} {config.get('limit').as_int()} {config.get('negative').as_int()}")
    log_info(f"{config.get('ratio').as_int(-1)} {config.get('ratio').text} {config.get('enabled').as_bool()}")
    log_info(f"{config.get('disabled').as_bool(True)} {config.get('nothing').is_null()} {config.get('absent').is_null()}")
    log_info(f"{config.get('absent').as_str('fallback')} {config.has('users')} {config.has('absent')} {config.size()}")
    for user in config.get("users").as_list():
        log_info(f"user {user.get('name').as_str()} key {user.get('key').as_str()}")
    log_info(f"{config.get('paths').as_str_list()} {config.get('paths').at(-1).as_int()} {config.get('paths').at(9).is_null()}")
    log_info(config.get("escaped").as_str())
    log_info(describe(config.get("nested")))
    log_info(describe(parse_json(b"[]")) + describe(parse_json(b" {} ")) + describe(parse_json(b"\"s\"")))
    for bad in [b"", b"{", b"[1,]", b"{\"a\" 1}", b"tru", b"[1] x", b"\"unterminated", b"{\"a\":\"\\q\"}"]:
        try:
            parse_json(bad)
            log_info("parsed?!")
        except JsonError as err:
            log_info(f"error: {err}")
    try:
        parse_json(b"nope")
    except ValueError:
        log_info("JsonError is a ValueError")
