"""sdk.encoding (base64, hex) and bytes() construction, as basic-auth plugins use them."""

from sdk.encoding import b64decode, b64encode, hexlify
from sdk.proxywasm import log_info


def main() -> None:
    for text in ["", "f", "fo", "foo", "foob", "fooba", "foobar", "user:pässwörd"]:
        encoded = b64encode(text.encode())
        log_info(f"{text!r} -> {encoded} -> {b64decode(encoded).decode()!r}")
    log_info(b64encode(bytes([251, 255, 191]), url=True) + " " + b64encode(bytes([251, 255, 191])))
    log_info(f"{b64decode('-_-_', url=True)} {b64decode('Zm9vYg')} {hexlify(bytes([0, 15, 255, 16]))}")
    header = "Basic " + b64encode(b"alice:secret")
    scheme, _, credentials = header.partition(" ")
    user, _, password = b64decode(credentials).decode().partition(":")
    log_info(f"{scheme} {user} {password}")
    for bad in ["A", "AB=C", "A*==", "AA=A", "AA==AA=="]:
        try:
            b64decode(bad)
            log_info(f"{bad} decoded?!")
        except ValueError as err:
            log_info(f"{bad}: {err}")
    log_info(f"{bytes(3)} {len(bytes(0))}")
    try:
        bytes([256])
    except ValueError as err:
        log_info(f"{err}")
