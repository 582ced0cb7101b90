"""OSC bytes to typed commands and back: the wire format, then validation against the address table.

Everything here is pure (bytes and values in, values or exceptions out): no sockets, no threads.
The wire decoder is strict (lengths, padding, leftovers, UTF-8), so a datagram that is not OSC
raises ``MalformedPacket`` instead of turning into a misaligned message.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from osc_protocol.table import PARAMS, REPLIES, REQUESTS, TYPE_NAMES, Arg, Request

IMMEDIATELY = 1  # the OSC timetag that means "now"
MAX_BUNDLE_DEPTH = 8
_NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01
_BUNDLE_HEAD = b"#bundle\x00"

KIND_NAMES = {
    "i": "int", "h": "int64", "f": "float", "d": "double", "s": "string", "S": "symbol", "c": "char",
    "b": "blob", "T": "true", "F": "false", "N": "nil", "I": "infinitum", "t": "timetag", "m": "midi",
    "r": "rgba", "[": "array",
}
_INT_KINDS = "ih"
_NUMBER_KINDS = "ihfd"
_STRING_KINDS = "sS"

Value = int | float | str | bytes | bool | None | tuple
ArgValue = int | float | str | None


class MalformedPacket(ValueError):
    """The bytes are not a valid OSC message or bundle."""


class RequestError(Exception):
    """A request the protocol refuses; ``code`` is one of ``table.ERRORS``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Message:
    """A decoded OSC message; ``kinds`` holds one type tag per top-level argument ("[" for an array)."""

    address: str
    args: tuple[Value, ...]
    kinds: str


@dataclass(frozen=True)
class Bundle:
    """A decoded OSC bundle; ``timetag`` is the raw 64-bit NTP value (1 = immediately)."""

    timetag: int
    elements: tuple[Message | Bundle, ...]


@dataclass(frozen=True)
class Command:
    """A validated request, ready for the application: ``args`` maps every argument name to its value.

    ``timetag`` is the UNIX time the enclosing bundle asked for, or None for "immediately"; the server
    hands commands over at once whatever it says (see docs/OSC.md).
    """

    name: str
    address: str
    args: Mapping[str, ArgValue]
    source: tuple[str, int]
    timetag: float | None = None


# ---------------------------------------------------------------- wire format: decoding


def decode_packet(data: bytes) -> Message | Bundle:
    """Decode one UDP datagram into a message or a (possibly nested) bundle."""
    return _decode(bytes(data), 0)


def iter_messages(packet: Message | Bundle, timetag: int | None = None) -> Iterator[tuple[Message, int | None]]:
    """Yield every message of a packet in order, with the timetag of its innermost bundle (None if bare)."""
    if isinstance(packet, Message):
        yield packet, timetag
        return
    for element in packet.elements:
        yield from iter_messages(element, packet.timetag)


def timetag_to_unix(timetag: int | None) -> float | None:
    """The UNIX time of an NTP timetag, or None for "immediately"."""
    if timetag is None or timetag == IMMEDIATELY:
        return None
    return (timetag >> 32) - _NTP_UNIX_OFFSET + (timetag & 0xFFFFFFFF) / 2**32


def unix_to_timetag(seconds: float) -> int:
    """The NTP timetag of a UNIX time."""
    whole = math.floor(seconds)
    fraction = int((seconds - whole) * 2**32)
    return ((whole + _NTP_UNIX_OFFSET) << 32) | fraction


def _decode(data: bytes, depth: int) -> Message | Bundle:
    if data.startswith(_BUNDLE_HEAD):
        return _decode_bundle(data, depth)
    if data.startswith(b"/"):
        return _decode_message(data)
    raise MalformedPacket(f"an OSC packet starts with '/' or '#bundle', got {data[:16]!r}")


def _decode_bundle(data: bytes, depth: int) -> Bundle:
    if depth >= MAX_BUNDLE_DEPTH:
        raise MalformedPacket(f"bundles may nest at most {MAX_BUNDLE_DEPTH} deep")
    if len(data) < 16:
        raise MalformedPacket(f"a bundle needs 16 bytes of header, got {len(data)}")
    (timetag,) = struct.unpack_from(">Q", data, 8)
    elements = []
    index = 16
    while index < len(data):
        if index + 4 > len(data):
            raise MalformedPacket("bundle element size cut short")
        (size,) = struct.unpack_from(">i", data, index)
        index += 4
        if size <= 0 or size % 4 or index + size > len(data):
            raise MalformedPacket(f"bundle element size must be a positive multiple of 4 within the bundle, got {size}")
        elements.append(_decode(data[index : index + size], depth + 1))
        index += size
    return Bundle(timetag, tuple(elements))


def _decode_message(data: bytes) -> Message:
    address, index = _read_string(data, 0)
    if index == len(data):  # very old senders omit the type tag string
        return Message(address, (), "")
    tags, index = _read_string(data, index)
    if not tags.startswith(","):
        raise MalformedPacket(f"the type tag string must start with ',', got {tags[:16]!r}")
    stack: list[list[Value]] = [[]]
    kinds = []
    for tag in tags[1:]:
        if tag == "[":
            stack.append([])
            continue
        if tag == "]":
            if len(stack) < 2:
                raise MalformedPacket(f"unbalanced ']' in type tags {tags!r}")
            array = tuple(stack.pop())
            stack[-1].append(array)
            if len(stack) == 1:
                kinds.append("[")
            continue
        value, index = _read_value(tag, data, index)
        stack[-1].append(value)
        if len(stack) == 1:
            kinds.append(tag)
    if len(stack) != 1:
        raise MalformedPacket(f"unbalanced '[' in type tags {tags!r}")
    if index != len(data):
        raise MalformedPacket(f"{len(data) - index} bytes left over after the arguments of {address}")
    return Message(address, tuple(stack[0]), "".join(kinds))


_FIXED = {"i": (">i", 4), "h": (">q", 8), "f": (">f", 4), "d": (">d", 8), "t": (">Q", 8), "r": (">I", 4)}
_NO_DATA = {"T": True, "F": False, "N": None, "I": None}


def _read_value(tag: str, data: bytes, index: int) -> tuple[Value, int]:
    if tag in _FIXED:
        fmt, size = _FIXED[tag]
        if index + size > len(data):
            raise MalformedPacket(f"argument of type {tag!r} cut short")
        return struct.unpack_from(fmt, data, index)[0], index + size
    if tag in _NO_DATA:
        return _NO_DATA[tag], index
    if tag in "sS":
        return _read_string(data, index)
    if tag == "b":
        if index + 4 > len(data):
            raise MalformedPacket("blob size cut short")
        (size,) = struct.unpack_from(">i", data, index)
        end = index + 4 + size
        if size < 0 or _align(end) > len(data):
            raise MalformedPacket(f"blob of {size} bytes does not fit in the datagram")
        return data[index + 4 : end], _align(end)
    if tag == "c":
        if index + 4 > len(data):
            raise MalformedPacket("char argument cut short")
        (code,) = struct.unpack_from(">I", data, index)
        if code > 0x10FFFF:
            raise MalformedPacket(f"char argument {code} is not a character")
        return chr(code), index + 4
    if tag == "m":
        if index + 4 > len(data):
            raise MalformedPacket("midi argument cut short")
        return data[index : index + 4], index + 4
    raise MalformedPacket(f"unknown type tag {tag!r}")


def _read_string(data: bytes, index: int) -> tuple[str, int]:
    end = data.find(b"\x00", index)
    if end < 0:
        raise MalformedPacket("string is not terminated by a NUL byte")
    after = _align(end + 1)
    if after > len(data):
        raise MalformedPacket("string padding cut short")
    try:
        return data[index:end].decode("utf-8"), after
    except UnicodeDecodeError as exc:
        raise MalformedPacket(f"string is not valid UTF-8: {data[index:end][:32]!r}") from exc


def _align(n: int) -> int:
    return (n + 3) & ~3


# ---------------------------------------------------------------- wire format: encoding


def encode_message(address: str, *args: Any) -> bytes:
    """Encode a message; ints become 'i' (or 'h' past 32 bits), floats 'f', str 's', bytes 'b',
    bools 'T'/'F', None 'N', lists and tuples arrays; numpy scalars pass as ints and floats."""
    if not address.startswith("/"):
        raise ValueError(f"an OSC address must start with '/', got {address!r}")
    tags: list[str] = [","]
    payload: list[bytes] = []
    for value in args:
        _encode_value(value, tags, payload)
    return _pack_string(address) + _pack_string("".join(tags)) + b"".join(payload)


def encode_bundle(*elements: bytes, timetag: int = IMMEDIATELY) -> bytes:
    """Encode a bundle of already encoded messages or bundles."""
    parts = [_BUNDLE_HEAD, struct.pack(">Q", timetag)]
    for element in elements:
        if not element or len(element) % 4:
            raise ValueError(f"bundle elements are encoded packets (a multiple of 4 bytes), got {len(element)} bytes")
        parts += [struct.pack(">i", len(element)), element]
    return b"".join(parts)


def _encode_value(value: Any, tags: list[str], payload: list[bytes]) -> None:
    if value is True or value is False:
        tags.append("T" if value else "F")
    elif value is None:
        tags.append("N")
    elif isinstance(value, numbers.Integral):
        number = int(value)
        if -(2**31) <= number < 2**31:
            tags.append("i")
            payload.append(struct.pack(">i", number))
        elif -(2**63) <= number < 2**63:
            tags.append("h")
            payload.append(struct.pack(">q", number))
        else:
            raise ValueError(f"OSC integers must fit in 64 bits, got {number}")
    elif isinstance(value, numbers.Real):
        tags.append("f")
        payload.append(struct.pack(">f", float(value)))
    elif isinstance(value, str):
        tags.append("s")
        payload.append(_pack_string(value))
    elif isinstance(value, (bytes, bytearray)):
        tags.append("b")
        payload.append(struct.pack(">i", len(value)) + bytes(value) + b"\x00" * (_align(len(value)) - len(value)))
    elif isinstance(value, (list, tuple)):
        tags.append("[")
        for item in value:
            _encode_value(item, tags, payload)
        tags.append("]")
    else:
        raise TypeError(f"cannot send {type(value).__name__} over OSC; use int, float, str, bytes, bool or None")


def _pack_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    if b"\x00" in raw:
        raise ValueError(f"OSC strings cannot contain NUL characters: {text[:40]!r}")
    return raw + b"\x00" * (_align(len(raw) + 1) - len(raw))


# ---------------------------------------------------------------- validation against the table


def to_command(message: Message, source: tuple[str, int], timetag: float | None = None) -> Command:
    """Validate a message against the address table; raise ``RequestError`` naming what is wrong."""
    spec = REQUESTS.get(message.address)
    if spec is None:
        raise RequestError("unknown_address", _unknown_address_text(message.address))
    try:
        args = _bind(spec, message)
    except RequestError as exc:
        raise RequestError(exc.code, f"{spec.address}: {exc.message}") from None
    return Command(spec.name, spec.address, MappingProxyType(args), source, timetag)


def check_value(arg: Arg, value: Value, kind: str, param: str | None = None) -> int | float | str:
    """One argument's check: coerce the tolerated types, then the range or choices."""
    if arg.type == "value":
        if param is None:
            raise RequestError("missing_argument", f"{arg.name} needs a setting name before it")
        return check_value(PARAMS[param], value, kind)
    if arg.type == "i":
        if kind in _INT_KINDS:
            number: int | float = int(value)  # type: ignore[arg-type]
        elif kind in "fd" and math.isfinite(value) and float(value).is_integer():  # type: ignore[arg-type]
            number = int(value)  # type: ignore[arg-type]
        else:
            raise RequestError("bad_type", f"{arg.name} must be an integer, got {_show(value, kind)}")
        return _in_range(arg, number)
    if arg.type == "f":
        if kind not in _NUMBER_KINDS:
            raise RequestError("bad_type", f"{arg.name} must be a number, got {_show(value, kind)}")
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number):
            raise RequestError("out_of_range", f"{arg.name} must be a finite number, got {number}")
        return _in_range(arg, number)
    if kind not in _STRING_KINDS:  # "s" and "param"
        raise RequestError("bad_type", f"{arg.name} must be a string, got {_show(value, kind)}")
    text = str(value)
    if not text:
        raise RequestError("bad_value", f"{arg.name} must not be empty")
    if arg.type == "param" and text not in PARAMS:
        raise RequestError("unknown_param", f"unknown setting {text!r}; settings are: {', '.join(PARAMS)}")
    if arg.choices and text not in arg.choices:
        raise RequestError("bad_value", f"{arg.name} must be one of {', '.join(arg.choices)}, got {text!r}")
    return text


def _bind(spec: Request, message: Message) -> dict[str, ArgValue]:
    given = list(zip(message.args, message.kinds, strict=True))
    bound: dict[str, ArgValue] = {}
    used = 0
    param: str | None = None
    for position, arg in enumerate(spec.args):
        if used < len(given):
            value, kind = given[used]
            if arg.optional and _required_after(spec, position) and not _same_family(arg.type, kind):
                bound[arg.name] = arg.default  # a leading optional argument that was left out
                continue
            bound[arg.name] = check_value(arg, value, kind, param)
            used += 1
        elif arg.optional:
            bound[arg.name] = arg.default
        else:
            raise RequestError(
                "missing_argument",
                f"missing argument {arg.name} ({TYPE_NAMES[arg.type]}); usage: {spec.usage}",
            )
        if arg.type == "param":
            param = str(bound[arg.name])
    if used < len(given):
        most = len(spec.args)
        raise RequestError(
            "too_many_arguments",
            f"takes at most {most} argument{'s' if most != 1 else ''}, got {len(given)}; usage: {spec.usage}",
        )
    return bound


def _required_after(spec: Request, position: int) -> bool:
    return any(not a.optional for a in spec.args[position + 1 :])


def _same_family(arg_type: str, kind: str) -> bool:
    return (kind in _STRING_KINDS) == (arg_type in ("s", "param"))


def _in_range(arg: Arg, number: int | float) -> int | float:
    if (arg.low is not None and number < arg.low) or (arg.high is not None and number > arg.high):
        raise RequestError("out_of_range", f"{arg.name} must be in range {arg.range_text}, got {number}")
    return number


def _show(value: Value, kind: str) -> str:
    if isinstance(value, str):
        shown = repr(value if len(value) <= 40 else value[:40] + "…")
    elif isinstance(value, (bytes, tuple)):
        shown = f"{len(value)} items" if isinstance(value, tuple) else f"{len(value)} bytes"
    else:
        shown = repr(value)
    return f"{shown} ({KIND_NAMES.get(kind, kind)})"


def _unknown_address_text(address: str) -> str:
    if any(c in address for c in "*?[]{}"):
        return f"address patterns are not supported, got {address!r}; send one of the addresses in docs/OSC.md"
    close = difflib.get_close_matches(address, REQUESTS, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown address {address!r}{hint}"


# ---------------------------------------------------------------- replies


def encode_reply(address: str, *args: Any) -> bytes:
    """Encode a reply after checking it against the reply table (a mismatch is a programming error)."""
    spec = REPLIES.get(address)
    if spec is None:
        raise ValueError(f"{address!r} is not a reply address; replies are: {', '.join(REPLIES)}")
    values: list[Any] = []
    for position, arg in enumerate(spec.args):
        rest = args[position:] if arg.repeated else args[position : position + 1]
        if not rest and not arg.optional:
            raise ValueError(f"reply {address} needs {arg.name}; usage: {spec.usage}")
        values += [_reply_value(address, arg, v) for v in rest]
    if len(args) > len(values):
        raise ValueError(f"reply {address} takes {len(spec.args)} arguments, got {len(args)}; usage: {spec.usage}")
    return encode_message(address, *values)


def _reply_value(address: str, arg: Arg, value: Any) -> int | float | str:
    if isinstance(value, os.PathLike) and arg.type == "s":
        value = os.fspath(value)
    ok = {
        "i": isinstance(value, numbers.Integral) and not isinstance(value, bool),
        "f": isinstance(value, numbers.Real) and not isinstance(value, bool),
        "s": isinstance(value, str),
        "any": isinstance(value, (str, numbers.Real)) and not isinstance(value, bool),
    }[arg.type]
    if not ok:
        wanted = {"i": "an integer", "f": "a number", "s": "a string", "any": "an int, float or string"}[arg.type]
        raise TypeError(f"reply {address}: {arg.name} must be {wanted}, got {value!r}")
    if arg.type == "f":
        return float(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    return value
