"""A small OSC client for scripts, tests and ``dd-companion send``.

It owns one UDP socket, so the companion's replies (sent to the sender's address) come back to it.
One client is meant for one thread.
"""

from __future__ import annotations

import argparse
import re
import shlex
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from osc_protocol.codec import MalformedPacket, decode_packet, encode_message, iter_messages
from osc_protocol.table import DEFAULT_HOST, DEFAULT_PORT, REPLIES, REQUESTS

Reply = tuple[str, tuple[Any, ...]]
_JOB_REPLIES = frozenset(r.address for r in REPLIES.values() if r.args and r.args[0].name == "job")
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


def final_replies(address: str) -> tuple[str, ...]:
    """The replies that end a request to ``address`` (from the table; done/error when unknown)."""
    spec = REQUESTS.get(address)
    if spec is None:
        return ("/dd/done", "/dd/error")
    return (*spec.replies, "/dd/error")


class OscClient:
    """Talks to a companion at host:port; ``timeout`` is the default wait for replies, in seconds."""

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, timeout: float = 5.0) -> None:
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        self.server: tuple[str, int] = sockaddr[:2]
        self.timeout = timeout
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        self._pending: deque[Reply] = deque()

    @property
    def address(self) -> tuple[str, int]:
        """The client's own (host, port): where replies come back."""
        return self._sock.getsockname()[:2]

    def send(self, address: str, *args: Any) -> None:
        """Send one message (int → i, float → f, str → s, bytes → b, bool → T/F, None → N)."""
        self._sock.sendto(encode_message(address, *args), self.server)

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (bundles built with ``codec.encode_bundle``, or garbage for tests)."""
        self._sock.sendto(data, self.server)

    def receive(self, timeout: float | None = None) -> Reply | None:
        """The next message from the server, or None when none comes within ``timeout``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._pending:
            self._sock.settimeout(max(0.0, deadline - time.monotonic()))  # 0 polls without blocking
            try:
                data, source = self._sock.recvfrom(65536)
            except (TimeoutError, BlockingIOError):
                return None
            except ConnectionRefusedError as exc:
                raise ConnectionRefusedError(f"nothing listens for OSC on {self.server[0]}:{self.server[1]}") from exc
            if source[0] != self.server[0]:
                continue  # not from the companion
            try:
                packet = decode_packet(data)
            except MalformedPacket:
                continue
            self._pending.extend((m.address, m.args) for m, _ in iter_messages(packet))
        return self._pending.popleft()

    def drain(self) -> list[Reply]:
        """Every message already received and not read yet."""
        found = list(self._pending)
        self._pending.clear()
        while (message := self.receive(0.0)) is not None:
            found.append(message)
        return found

    def wait_for(
        self,
        expect: str | Sequence[str],
        timeout: float | None = None,
        job: int | None = None,
        on_reply: Callable[[str, tuple[Any, ...]], None] | None = None,
    ) -> Reply:
        """Read messages until one whose address is in ``expect`` arrives (for replies that carry a job,
        only that ``job`` or -1 counts); raise ``TimeoutError`` if none does in time."""
        wanted = (expect,) if isinstance(expect, str) else tuple(expect)
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            message = self.receive(max(0.0, deadline - time.monotonic()))
            if message is None:
                raise TimeoutError(f"no {' or '.join(wanted)} from {self.server[0]}:{self.server[1]} in {limit:g} s")
            if on_reply is not None:
                on_reply(*message)
            address, args = message
            if address == "/dd/queued" and job is None and "/dd/queued" not in wanted and args:
                job = args[0]
            if address not in wanted:
                continue
            if job is not None and address in _JOB_REPLIES and args and args[0] not in (job, -1):
                continue
            return message

    def request(
        self,
        address: str,
        *args: Any,
        expect: Sequence[str] | None = None,
        timeout: float | None = None,
        on_reply: Callable[[str, tuple[Any, ...]], None] | None = None,
    ) -> Reply:
        """Send a request and return its final reply; ``expect`` defaults to the table's final replies
        for ``address`` plus /dd/error (``("/dd/done", "/dd/error")`` for addresses not in the table).
        Messages that arrived before the request are discarded."""
        self.drain()
        self.send(address, *args)
        return self.wait_for(final_replies(address) if expect is None else expect, timeout, on_reply=on_reply)

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def __enter__(self) -> OscClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def infer_arg(text: str) -> int | float | str:
    """A command-line word as an OSC value: ints, then floats, else the string. Prefixes force a type:
    ``s:808`` is the string "808", ``f:1`` the float 1.0, ``i:2`` the int 2."""
    if text.startswith("s:"):
        return text[2:]
    if text.startswith("i:") and _INT.fullmatch(text[2:]):
        return int(text[2:])
    if text.startswith("f:") and _FLOAT.fullmatch(text[2:]):
        return float(text[2:])
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def format_message(address: str, args: Sequence[Any]) -> str:
    """One line for a message, strings quoted only where a shell would need it."""
    words = [address]
    for value in args:
        if isinstance(value, str):
            words.append(shlex.quote(value))
        elif isinstance(value, float):
            words.append(format(value, ".6g"))
        else:
            words.append(str(value))
    return " ".join(words)


def send_command(argv: list[str]) -> int:
    """``dd-companion send [--host H] [--port P] [--wait] [--timeout S] ADDRESS [ARG …]``.

    Returns 0 when sent (or when the final reply is not an error), 1 for a /dd/error reply,
    2 for bad usage, 3 when no reply came in time, 4 when the network refused.
    """
    parser = argparse.ArgumentParser(
        prog="dd-companion send",
        description="Send one OSC message to the companion. ARGs are ints, floats or strings by their look; "
        "prefix s:, i: or f: to force a type (s:808).",
    )
    parser.add_argument("address", help="OSC address, e.g. /dd/generate")
    parser.add_argument("args", nargs="*", metavar="ARG", help="arguments, e.g. kick 4 -1")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"companion host (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"companion OSC port (default {DEFAULT_PORT})")
    parser.add_argument("--wait", action="store_true", help="print the replies until the final one")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait with --wait (default 120)")
    try:
        options = parser.parse_intermixed_args(argv)
    except SystemExit as exc:  # argparse has printed the usage
        return int(exc.code or 0)
    if not options.address.startswith("/"):
        print(f"dd-companion send: an OSC address starts with '/', got {options.address!r}", file=sys.stderr)
        return 2
    values = [infer_arg(a) for a in options.args]
    try:
        with OscClient(options.host, options.port, options.timeout) as client:
            if not options.wait:
                client.send(options.address, *values)
                return 0
            address, _ = client.request(
                options.address, *values, on_reply=lambda a, r: print(format_message(a, r), flush=True)
            )
    except TimeoutError as exc:
        print(f"dd-companion send: {exc} (is the companion serving OSC there?)", file=sys.stderr)
        return 3
    except OSError as exc:
        print(f"dd-companion send: cannot reach {options.host}:{options.port}: {exc}", file=sys.stderr)
        return 4
    except (TypeError, ValueError) as exc:
        print(f"dd-companion send: {exc}", file=sys.stderr)
        return 2
    return 1 if address == "/dd/error" else 0
