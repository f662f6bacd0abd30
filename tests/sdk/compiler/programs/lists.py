"""list operations."""

from sdk.proxywasm import log_info


def main() -> None:
    xs: list[int] = []
    for i in range(10):
        xs.append(i * i)
    log_info(f"{xs} {len(xs)} {xs[0]} {xs[-1]} {xs[2:5]} {xs[-3:]} {xs[:2]} {xs[8:100]}")
    xs.insert(0, -1)
    xs.insert(100, 1000)
    xs.insert(-1, 500)
    log_info(f"{xs}")
    log_info(f"{xs.pop()} {xs.pop(0)} {xs.pop(-2)} {xs}")
    xs.remove(16)
    log_info(f"{xs} {xs.index(25)} {xs.count(4)} {9 in xs} {10 in xs} {10 not in xs}")
    ys = [5, 3, 9, 1, 7, 3]
    ys.sort()
    log_info(f"{ys} {sorted([3, 1, 2], reverse=True)} {min(ys)} {max(ys)}")
    ys.reverse()
    log_info(f"{ys}")
    zs = ys.copy()
    zs.append(0)
    log_info(f"{len(ys)} {len(zs)} {ys == zs} {ys == [9, 7, 5, 3, 3, 1]} {ys + [100]}")
    ys.extend([11, 12])
    ys += [13]
    log_info(f"{ys}")
    ys[0] = 99
    ys[-1] += 1
    log_info(f"{ys}")
    del ys[1]
    log_info(f"{ys}")
    ys.clear()
    log_info(f"{ys} {len(ys)} {not ys}")
    words = ["pear", "apple", "fig"]
    words.sort()
    log_info(f"{words} {sorted(words, reverse=True)} {min(words)} {max(words)}")
    squares = [n * n for n in range(6) if n % 2 == 0]
    lengths = [len(w) for w in words]
    log_info(f"{squares} {lengths}")
    grid: list[list[int]] = []
    for r in range(3):
        row: list[int] = []
        for c in range(3):
            row.append(r * 3 + c)
        grid.append(row)
    log_info(f"{grid[1][2]} {len(grid)} {grid[2]}")
    pairs = [("a", 1), ("b", 2)]
    for name, value in pairs:
        log_info(f"{name}={value}")
    flags = [True, False]
    log_info(f"{flags}")
    total = 0
    for value in [1, 2, 3]:
        total += value
    log_info(f"{total}")
    big: list[str] = []
    for i in range(1000):
        big.append(str(i))
    log_info(f"{len(big)} {big[999]} {','.join(big[:5])}")
    items = ["x", "y", "z"]
    for index, item in enumerate(items):
        log_info(f"{index}:{item}")
    for index, item in enumerate(items, 1):
        log_info(f"{index}:{item}")
    for a, b in zip([1, 2, 3], ["one", "two"], strict=False):
        log_info(f"{a}-{b}")
    for item in reversed(items):
        log_info(item)
    log_info(f"{list(items)} {items[1:] == ['y', 'z']}")
    nothing: list[int] = []
    log_info(f"{sum([1, 2, 3])} {sum(nothing)} {any([0, 0, 3])} {all([1, 1, 0])} {any(nothing)} {all(nothing)}")
    log_info(f"{sum([x * x for x in range(10) if x % 2])} {all([w.islower() for w in ['a', 'b']])} {sum([True, True])}")
    zeros = [0] * 4
    zeros[1] = 7
    grid2 = [[1, 2]] * 2
    grid2[0].append(3)
    log_info(f"{zeros} {3 * ['a', 'b']} {[1] * 0} {[1] * -2} {grid2} {len(nothing * 5)}")
