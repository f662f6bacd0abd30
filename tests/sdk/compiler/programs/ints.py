"""int and bool arithmetic, comparisons and conversions."""

from sdk.proxywasm import log_info


def show(label: str, value: int) -> None:
    log_info(f"{label}={value}")


def main() -> None:
    a = 17
    b = -5
    show("add", a + b)
    show("sub", a - b)
    show("mul", a * b)
    show("floordiv", a // b)
    show("floordiv2", -a // 5)
    show("mod", a % b)
    show("mod2", -a % 5)
    show("mod3", -17 % -5)
    show("pow", 3**13)
    show("and", a & 12)
    show("or", a | 12)
    show("xor", a ^ 12)
    show("invert", ~a)
    show("shl", 1 << 40)
    show("shr", -1000 >> 3)
    show("neg", -a)
    show("abs", abs(b))
    show("min", min(a, b, 3))
    show("max", max(a, b, 3))
    show("bool_sum", True + True)
    show("int_str", int("  -42 "))
    show("int_underscore", int("1_000"))
    show("int_bool", int(True))
    big = 9223372036854775807
    show("big", big)
    show("small", -big - 1)
    log_info(f"cmp {a > b} {a == 17} {a != 17} {b <= -5} {b >= 0} {1 < 2 < 3} {3 < 2 < 1} {1 < 3 > 2}")
    x = 10
    x += 5
    x -= 3
    x *= 2
    x //= 5
    x %= 3
    show("aug", x)
    log_info(str(12345) + str(-7) + str(0))
    log_info(f"{a:5d}|{a:<5}|{a:^7}|{a:05d}|{b:05d}|{255:x}|{255:X}|{8:b}|{8:o}|{a:*>6}")
    log_info(repr(42))
    total = 0
    for i in range(100):
        if i % 3 == 0 or i % 5 == 0:
            total += i
    show("euler1", total)
    n = 0
    while n * n < 2000:
        n += 1
    show("sqrt", n)
