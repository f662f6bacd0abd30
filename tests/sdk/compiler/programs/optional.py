"""Optional values: None checks, boxing of Optional[int], defaults."""

from sdk.proxywasm import log_info


def find(values: list[str], wanted: str) -> int | None:
    for i, v in enumerate(values):
        if v == wanted:
            return i
    return None


def label(name: str | None) -> str:
    if name is None:
        return "nobody"
    return name.upper()


def main() -> None:
    values = ["a", "b", "c"]
    log_info(f"{find(values, 'b')} {find(values, 'z')}")
    index = find(values, "c")
    if index is not None:
        log_info(f"found at {index + 1}")
    missing = find(values, "q")
    log_info(f"{missing is None} {missing == None} {missing}")  # noqa: E711
    log_info(f"{label(None)} {label('ann')}")
    maybe: str | None = None
    log_info(f"{maybe or 'default'}")
    maybe = "set"
    log_info(f"{maybe or 'default'} {maybe}")
    counts: dict[str, int] = {"x": 0}
    got = counts.get("x")
    log_info(f"{got} {got is None} {counts.get('y') is None}")
    optional_list: list[int] | None = None
    if optional_list is None:
        optional_list = [1]
    optional_list.append(2)
    log_info(f"{optional_list}")
    flag: bool | None = None
    log_info(f"{flag}")
    flag = False
    log_info(f"{flag} {flag is None}")
