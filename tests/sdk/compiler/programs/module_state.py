"""Module constants and mutable module state."""

from sdk.proxywasm import log_info

LIMIT = 3
GREETING = "hi"
NEGATIVE = -7
seen: list[str] = []
totals: dict[str, int] = {}
calls = 0
last_name = ""


def record(name: str) -> None:
    global calls, last_name
    calls += 1
    last_name = name
    seen.append(name)
    totals[name] = totals.get(name, 0) + 1


def main() -> None:
    for i in range(LIMIT):
        record(f"{GREETING}{i % 2}")
        log_info(f"after {i}: {calls} {last_name}")
    log_info(f"{calls} {last_name} {seen} {totals['hi0']} {NEGATIVE}")
