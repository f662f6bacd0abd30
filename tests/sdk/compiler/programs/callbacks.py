"""Functions and bound methods as values (the shape of HTTP call callbacks)."""

from collections.abc import Callable

from sdk.proxywasm import log_info


def shout(a: int, b: int, c: int) -> None:
    log_info(f"shout {a + b + c}")


class Collector:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.seen: list[int] = []

    def on_result(self, a: int, b: int, c: int) -> None:
        self.seen.append(a * b * c)
        log_info(f"{self.prefix} {self.seen}")


class LoudCollector(Collector):
    def on_result(self, a: int, b: int, c: int) -> None:
        log_info("loud!")
        super().on_result(a, b, c)


def apply(callback: Callable[[int, int, int], None], n: int) -> None:
    callback(n, n + 1, n + 2)


def main() -> None:
    apply(shout, 1)
    collector = Collector("quiet")
    apply(collector.on_result, 2)
    apply(collector.on_result, 3)
    collectors: list[Collector] = [Collector("a"), LoudCollector("b")]
    for c in collectors:
        apply(c.on_result, 1)
    handlers: dict[str, Callable[[int, int, int], None]] = {"s": shout}
    handlers["c"] = collector.on_result
    handlers["c"](1, 1, 1)
    handlers["s"](1, 1, 1)
