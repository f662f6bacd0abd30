"""dict operations, including insertion order across deletes."""

from sdk.proxywasm import log_info


def pairs_text(d: dict[str, int]) -> str:
    return ", ".join([f"{k}:{v}" for k, v in d.items()])


def main() -> None:
    d: dict[str, int] = {}
    d["one"] = 1
    d["two"] = 2
    d["three"] = 3
    log_info(f"{len(d)} {d['two']} {'one' in d} {'four' in d} {'four' not in d}")
    log_info(f"{d.get('one')} {d.get('four')} {d.get('four', 4)} {d.get('two', 0)}")
    for key in d:
        log_info(f"key {key}")
    for key, value in d.items():
        log_info(f"item {key}={value}")
    log_info(f"{list(d.keys())} {list(d.values())} {list(d)}")
    del d["one"]
    d["one"] = 10
    log_info(pairs_text(d))
    log_info(f"{d.pop('two')} {d.pop('missing', -1)} {len(d)}")
    log_info(f"{d.setdefault('x', 5)} {d.setdefault('x', 6)} {d['x']}")
    d.update({"y": 7, "x": 8})
    log_info(pairs_text(d))
    counts: dict[str, int] = {}
    for word in "the cat and the hat and the bat".split():
        counts[word] = counts.get(word, 0) + 1
    log_info(pairs_text(counts))
    counts["the"] += 10
    log_info(f"{counts['the']}")
    by_id: dict[int, str] = {3: "c", 1: "a"}
    by_id[2] = "b"
    log_info(f"{by_id[1]} {by_id.get(5)} {sorted(by_id.keys())} {len(by_id)}")
    squares = {n: n * n for n in range(5)}
    log_info(f"{squares[4]} {len(squares)}")
    nested: dict[str, list[str]] = {"a": ["x"]}
    nested["a"].append("y")
    nested.setdefault("b", []).append("z")
    log_info(f"{nested['a']} {nested['b']}")
    big: dict[int, int] = {}
    for i in range(2000):
        big[i] = i * 2
    for i in range(0, 2000, 2):
        del big[i]
    log_info(f"{len(big)} {big[1999]} {list(big.keys())[:3]}")
    copy = dict(d)
    copy["new"] = 1
    log_info(f"{len(d)} {len(copy)}")
    copy.clear()
    log_info(f"{len(copy)} {not copy}")
    for v in d.values():
        log_info(f"value {v}")
    bkeys: dict[bytes, str] = {b"k": "v"}
    log_info(bkeys[b"k"])
