"""tuples: creation, indexing, unpacking, equality, as return values."""

from sdk.proxywasm import log_info


def divmod_py(a: int, b: int) -> tuple[int, int]:
    return a // b, a % b


def main() -> None:
    t = (1, "two", True)
    log_info(f"{t[0]} {t[1]} {t[2]} {t[-1]} {len(t)}")
    q, r = divmod_py(17, 5)
    log_info(f"{q} {r}")
    a, b = 1, 2
    a, b = b, a
    log_info(f"{a} {b}")
    log_info(f"{(1, 'x') == (1, 'x')} {(1, 'x') == (1, 'y')} {(1, 2) != (1, 2)}")
    pairs: list[tuple[str, int]] = [("a", 1)]
    pairs.append(("b", 2))
    for name, n in pairs:
        log_info(f"{name}{n}")
    (x, y), z = (1, 2), 3
    log_info(f"{x} {y} {z}")
