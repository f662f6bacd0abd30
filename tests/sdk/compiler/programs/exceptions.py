"""Exceptions: SDK status errors, builtin errors, custom errors, else/finally, re-raise."""

from sdk.errors import BadArgumentError, CasMismatchError, NotFoundError, ProxyWasmError
from sdk.proxywasm import log_info


class ConfigError(Exception):
    def __init__(self, field: str) -> None:
        super().__init__(f"bad field {field}")
        self.field = field


class StrictConfigError(ConfigError):
    pass


def check(value: int) -> int:
    if value < 0:
        raise ValueError("negative")
    if value == 0:
        raise NotFoundError("zero")
    if value > 100:
        raise StrictConfigError("value")
    return value * 2


def attempt(value: int) -> str:
    try:
        result = check(value)
    except ValueError as err:
        return f"value error: {err}"
    except (NotFoundError, CasMismatchError) as err:
        return f"status {err.status}: {err}"
    except ConfigError as err:
        return f"config error on {err.field}: {err}"
    else:
        return f"ok {result}"


def cleanup(value: int, log: list[str]) -> None:
    try:
        log.append("start")
        check(value)
        log.append("checked")
    finally:
        log.append("finally")


def main() -> None:
    for value in [5, -1, 0, 1000]:
        log_info(attempt(value))
    d: dict[str, int] = {"a": 1}
    try:
        log_info(str(d["missing"]))
    except KeyError as err:
        log_info(f"key error {err}")
    items = [1, 2]
    try:
        log_info(str(items[5]))
    except IndexError as err:
        log_info(f"index error {err}")
    try:
        log_info(str(10 // (len(items) - 2)))
    except ZeroDivisionError as err:
        log_info(f"zero division {err}")
    try:
        int("twelve")
    except ValueError as err:
        log_info(f"int error {err}")
    try:
        b"\xff".decode()
    except UnicodeDecodeError as err:
        log_info(f"decode error {err}")
    try:
        try:
            raise BadArgumentError("inner")
        except BadArgumentError:
            log_info("caught inner, re-raising")
            raise
    except ProxyWasmError as err:
        log_info(f"outer got {err} status {err.status}")
    log: list[str] = []
    cleanup(1, log)
    try:
        cleanup(-1, log)
    except ValueError:
        log.append("caught")
    log_info(",".join(log))
    try:
        raise KeyError("k")
    except LookupError as err:
        log_info(f"lookup {err}")
    try:
        assert len(items) == 3, "need three"
    except AssertionError as err:
        log_info(f"assert {err}")
    try:
        raise RuntimeError
    except Exception as err:
        log_info(f"bare class raise: {err}")
    try:
        items.pop(10)
    except IndexError:
        log_info("pop index")
    try:
        items.remove(99)
    except ValueError:
        log_info("remove missing")
