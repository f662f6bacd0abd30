"""Combinations that stress the code generator: exceptions through loops and calls,
deep dispatch, big containers, resizes, builders."""

from sdk.errors import NotFoundError
from sdk.proxywasm import log_info


class Base:
    def kind(self) -> str:
        return "base"

    def twice(self) -> str:
        return self.kind() + self.kind()


class Middle(Base):
    def kind(self) -> str:
        return "middle"


class Leaf(Middle):
    def twice(self) -> str:
        return "leaf:" + super().twice()


def make(n: int) -> Base:
    if n % 3 == 0:
        return Base()
    if n % 3 == 1:
        return Middle()
    return Leaf()


def lookup(table: dict[str, int], key: str) -> int:
    if key not in table:
        raise NotFoundError(key)
    return table[key]


def depth(n: int) -> int:
    if n == 0:
        raise ValueError("bottom")
    return depth(n - 1) + 1


def main() -> None:
    log_info(" ".join([make(i).twice() for i in range(6)]))
    table = {"a": 1, "b": 2}
    found: list[str] = []
    for key in ["a", "x", "b", "y", "stop", "never"]:
        try:
            if key == "stop":
                break
            found.append(f"{key}={lookup(table, key)}")
        except NotFoundError as err:
            found.append(f"missing {err}")
            continue
        finally:
            found.append(".")
    log_info(",".join(found))
    try:
        depth(50)
    except ValueError as err:
        log_info(f"unwound: {err}")
    numbers: dict[int, int] = {}
    for round_ in range(5):
        for i in range(300):
            numbers[i * 7 + round_] = i
        for i in range(0, 300, 2):
            del numbers[i * 7 + round_]
    keys = list(numbers.keys())
    log_info(f"{len(numbers)} {keys[:5]} {keys[-3:]} {sum_values(numbers)}")
    text = ""
    for i in range(500):
        text += chr(65 + i % 26)
    log_info(f"{len(text)} {text[:30]} {text.count('A')} {text.rfind('XYZ')}")
    words = ["zèbre", "apple", "Zulu", "éclair", "banana", "Ápple"]
    words.sort()
    log_info(" ".join(words))
    groups: dict[str, list[str]] = {}
    for w in words:
        groups.setdefault(w[0], []).append(w)
    log_info(str({k: len(v) for k, v in groups.items() if len(v) > 0}))
    matrix = [[r * c for c in range(4)] for r in range(4)]
    matrix[2][3] += 100
    log_info(f"{matrix}")
    counts: dict[str, list[int]] = {"x": [0]}
    counts["x"][0] += 5
    counts["x"] += [7]
    log_info(f"{counts}")


def sum_values(d: dict[int, int]) -> int:
    total = 0
    for v in d.values():
        total += v
    return total
