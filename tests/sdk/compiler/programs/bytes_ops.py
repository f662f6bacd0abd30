"""bytes: indexing gives ints, slicing, searching, iteration, decoding."""

from sdk.proxywasm import log_info


def main() -> None:
    data = b"GET /path?x=1 HTTP/1.1"
    log_info(f"{len(data)} {data[0]} {data[-1]} {data[4:9]} {data.find(b'?')} {b'HTTP' in data}")
    log_info(f"{data.startswith(b'GET')} {data.endswith(b'1.1')} {data.split(b' ')} {data.count(b'/')}")
    total = 0
    for byte in b"\x01\x02\xff":
        total += byte
    log_info(f"{total} {b'ab' + b'cd'} {b'-' * 3} {b'' == b''} {b'a' < b'b'}")
    log_info(f"{b'  trim '.strip()} {b'A,B'.lower()} {data.replace(b'/', b'|')} {b'x'.join([b'a', b'b'])}")
    cafe = b"caf\xc3\xa9"
    log_info(f"{cafe.decode()} {bytes_text()}")


def bytes_text() -> str:
    raw = "ünïcode".encode()
    return f"{len(raw)} {raw[:3]} {raw.decode()}"
