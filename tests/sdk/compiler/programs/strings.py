"""str operations: slicing, searching, splitting, case, formatting, non-ASCII text."""

from sdk.proxywasm import log_info


def main() -> None:
    s = "Hello, World"
    log_info(s + "!" + s[0] + s[-1] + s[7:] + s[:5] + s[-5:-1] + s[3:1] + s[100:] + s[:])
    log_info(f"len={len(s)} find={s.find('o')} find2={s.find('o', 5)} rfind={s.rfind('o')} missing={s.find('z')}")
    log_info(f"index={s.index('W')} count={s.count('l')} count_empty={'abc'.count('')}")
    log_info(f"{s.startswith('Hell')} {s.endswith('World')} {s.startswith(('x', 'He'))} {s.endswith(('a', 'b'))}")
    log_info(s.replace("l", "L") + "|" + "aaa".replace("a", "bb") + "|" + "ab".replace("", "-"))
    log_info("|".join(["a", "b", "c"]) + "|" + ",".join([]) + "|" + "-".join(["solo"]))
    parts = "a,b,,c".split(",")
    log_info(f"{len(parts)} {parts}")
    messy = "  a  b\tc \n"
    log_info(f"{messy.split()} {'a b c d'.split(' ', 2)} {'x'.split(',')} {''.split()}")
    log_info(f"[{'  pad  '.strip()}] [{'  pad  '.lstrip()}] [{'  pad  '.rstrip()}] [{'xxhixx'.strip('x')}]")
    log_info("MiXeD".lower() + "MiXeD".upper())
    blank = " \t"
    log_info(f"{'123'.isdigit()} {'12a'.isdigit()} {'abc'.isalpha()} {'ab1'.isalnum()} {blank.isspace()} {''.isdigit()}")
    log_info(f"{'abc'.islower()} {'aBc'.islower()} {'ABC1'.isupper()}")
    log_info(f"{'ell' in s} {'xyz' in s} {'' in s} {'z' not in s}")
    log_info("ab" * 3 + "|" + 2 * "cd" + "|" + "x" * 0)
    log_info(f"{'abc' < 'abd'} {'abc' < 'ab'} {'b' > 'abc'} {'abc' == 'abc'} {'abc' != 'abd'} {'a' <= 'a'}")
    log_info(repr("it's") + repr('say "hi"') + repr("both ' and \"") + repr("tab\there\nnl\\"))
    log_info(f"{ord('A')} {chr(66)} {ord('é')} {chr(233)} {chr(8364)} {ord('€')}")
    log_info("prefix-value".removeprefix("prefix-") + " " + "value.txt".removesuffix(".txt") + " " + "x".removeprefix("y"))
    head, sep, tail = "key=value=more".partition("=")
    log_info(f"{head}|{sep}|{tail}")
    head, sep, tail = "key=value=more".rpartition("=")
    log_info(f"{head}|{sep}|{tail}")
    head, sep, tail = "novalue".partition("=")
    log_info(f"{head}|{sep}|{tail}")
    text = "naïve café €5 日本"
    log_info(f"{len(text)} {text[2]} {text[-2:]} {text.find('café')} {text[6:10]}")
    chars: list[str] = []
    for ch in "añb€":
        chars.append(ch)
    log_info(f"{chars} {len(chars)}")
    log_info(f"{'名前':>6}|{'ab':<4}|{'ab':^6}|{'x':_^5}")
    log_info(f"{s!r} {3!r} {None} {True} {False}")
    encoded = "héllo".encode()
    log_info(f"{len(encoded)} {encoded} {encoded.decode()}")
    log_info(b"bad \xff\xfe bytes \xe2\x82".decode("utf-8", "replace"))
    log_info(b"\xed\xa0\x80x\xf0\x9f\x98".decode("utf-8", errors="replace"))
    empty = ""
    log_info(f"[{empty}] {len(empty)} {empty == ''} {not empty}")
    word = "level"
    reversed_word = ""
    for c in word:
        reversed_word = c + reversed_word
    log_info(f"{word == reversed_word}")
    log_info("{} + {} = {total:>4}".format("a", "b", total=3) + " {1}{0}{1!r}".format("x", "y"))
    log_info("{:05d}|{:x}|{:<6}|{}".format(42, 255, "ab", None))
    log_info(f"{lines_of()}")


def lines_of() -> list[str]:
    text = "one\ntwo\r\nthree\rfour\n\nlast"
    return text.splitlines() + "".splitlines() + "trail\n".splitlines()
