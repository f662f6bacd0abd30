"""Control flow: if/elif/else, loops with break/continue, ternaries, and/or values."""

from sdk.proxywasm import log_info


def classify(n: int) -> str:
    if n < 0:
        return "negative"
    elif n == 0:
        return "zero"
    elif n < 10:
        return "small"
    else:
        return "large"


def first_even(values: list[int]) -> int:
    for v in values:
        if v % 2 == 0:
            return v
    return -1


def main() -> None:
    log_info(f"{classify(-3)} {classify(0)} {classify(5)} {classify(50)}")
    log_info(f"{first_even([1, 3, 4, 5])} {first_even([1])}")
    found: list[int] = []
    for i in range(20):
        if i % 2 == 0:
            continue
        if i > 11:
            break
        found.append(i)
    log_info(f"{found}")
    i = 0
    while True:
        i += 1
        if i == 3:
            continue
        if i > 6:
            break
        log_info(f"w{i}")
    log_info(f"{[j for j in range(10, 0, -3)]} {[j for j in range(5, 5)]} {[j for j in range(-2, 3)]}")
    for outer in range(3):
        for inner in range(3):
            if inner == outer:
                break
            log_info(f"{outer}{inner}")
    x = 5
    label = "big" if x > 3 else "small"
    log_info(label)
    name = ""
    fallback = name or "anonymous"
    both = "a" and "b"
    neither = "" and "b"
    log_info(f"{fallback} {both} [{neither}] {0 or 7} {3 and 4} {not x}")
    if x > 3 and x < 10 or x == 100:
        log_info("range ok")
    if not (x > 3 and x < 4):
        log_info("not ok")
    empty: list[int] = []
    if empty:
        log_info("never")
    if [0]:
        log_info("non-empty list is true")
    if {"a": 1}:
        log_info("non-empty dict is true")
    count = 0
    while count < 3:
        count += 1
    else_flag = "ran" if count == 3 else "no"
    log_info(else_flag)
    pass
