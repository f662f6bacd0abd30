"""float arithmetic, comparisons, conversions and fixed-precision formatting."""

from sdk.proxywasm import log_info


def mean(values: list[int]) -> float:
    return sum_of(values) / len(values)


def sum_of(values: list[int]) -> int:
    total = 0
    for v in values:
        total += v
    return total


def main() -> None:
    x = 7.25
    y = 2.0
    log_info(f"{x + y:.2f} {x - y:.3f} {x * y:.1f} {x / y:.4f} {x // y:.1f} {x % y:.2f} {-x:.2f}")
    log_info(f"{int(x)} {int(-x)} {float(3):.1f} {7 / 2:.2f} {1 / 3:.5f} {2 ** 10}")
    log_info(f"{x > y} {x == 7.25} {y < 2} {y >= 2} {1.5 < 2} {abs(-2.5):.1f} {max(1.5, 2.5):.1f}")
    log_info(f"{mean([1, 2, 3, 4]):.2f} {mean([10, 20]):08.3f} {0.0:.2f} {123456.75:.1f}")
    ratio = 0.0
    for _ in range(4):
        ratio += 0.25
    log_info(f"{ratio:.2f} {ratio == 1.0}")
    try:
        log_info(f"{x / 0:.1f}")
    except ZeroDivisionError as err:
        log_info(f"zero: {err}")
    values = [3.5, -1.25, 2.0]
    values.sort()
    log_info(" ".join([f"{v:.2f}" for v in values]) + f" {min(values):.2f}")
