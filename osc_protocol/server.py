"""The OSC server: one thread with a blocking UDP socket that decodes, validates and hands off.

It answers ``/dd/ping`` and the reply subscriptions itself; every other valid request becomes a
``Command`` for the application's handler, which runs in the server thread and must return fast
(it submits work to the engine and replies later through the ``Replier``). Nothing a client sends
can stop the loop: every refusal is a log line on "dd.osc" and, when possible, a ``/dd/error``.
Bundles are unpacked and executed at once, whatever their timetag (see docs/OSC.md).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from osc_protocol.codec import (
    Command,
    MalformedPacket,
    Message,
    RequestError,
    decode_packet,
    encode_reply,
    iter_messages,
    timetag_to_unix,
    to_command,
)
from osc_protocol.table import DEFAULT_HOST, DEFAULT_PORT, MAX_SUBSCRIPTIONS

log = logging.getLogger("dd.osc")

Address = tuple[str, int]
Handler = Callable[[Command, "Replier"], None]
_CODE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_DROP_LOG_INTERVAL = 5.0  # seconds between log lines about one refused source


class Replier:
    """Sends replies for one request, from any thread, to wherever that sender's replies go now."""

    def __init__(self, server: OscServer, source: Address) -> None:
        self._server = server
        self.source = source

    def send(self, address: str, *args: Any) -> None:
        """Send a reply listed in the reply table (``ValueError``/``TypeError`` if it does not match)."""
        self._server._send(encode_reply(address, *args), self._server.destinations(self.source))

    def error(self, job: int, code: str, message: str) -> None:
        """Send ``/dd/error job code message``."""
        self.send("/dd/error", job, code, message)

    def progress(self, job: int, fraction: float) -> None:
        """Send ``/dd/progress job fraction``."""
        self.send("/dd/progress", job, fraction)

    def done(self, job: int, *paths: Any) -> None:
        """Send ``/dd/done job path…``."""
        self.send("/dd/done", job, *paths)


class OscServer:
    """The companion's OSC endpoint.

    ``host`` is 127.0.0.1 unless the caller asks for the network, which needs ``allow`` (IP addresses
    or CIDR networks); with ``allow`` given, only those sources are served, loopback included.
    ``reply_port`` sends replies to that port on the sender's host instead of the sender's own port.
    ``port=0`` picks a free port (see ``address``).
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        handler: Handler | None = None,
        reply_port: int | None = None,
        allow: Iterable[str] | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in range 0..65535, got {port}")
        if reply_port is not None and not 1 <= reply_port <= 65535:
            raise ValueError(f"reply_port must be in range 1..65535, got {reply_port}")
        self._allow = None if allow is None else tuple(_network(a) for a in allow)
        if self._allow is None and not _is_loopback(host):
            raise ValueError(
                f"listening on {host!r} opens the companion to the network: give an allow-list of client "
                "addresses or networks (e.g. 192.168.1.0/24), or listen on 127.0.0.1"
            )
        self.host = host
        self.port = port
        self.handler = handler
        self.reply_port = reply_port
        self._subscriptions: dict[str, list[Address]] = {}  # sender host -> reply addresses
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._address: Address | None = None
        self._last_drop_log: dict[str, tuple[float, int]] = {}

    # ------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Bind the socket and start the server thread; raise ``OSError`` if the port is taken."""
        if self._thread is not None:
            raise RuntimeError("the OSC server is already running")
        family, _, _, _, sockaddr = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot listen for OSC on {self.host}:{self.port}: {exc.strerror}") from exc
        _tune(sock)
        self._sock = sock
        self._address = sock.getsockname()[:2]
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="dd-osc-server", daemon=True)
        self._thread.start()
        log.info("OSC server listening on %s:%d", *self._address)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the server thread and close the socket; replies sent afterwards are dropped."""
        thread, sock = self._thread, self._sock
        if thread is None or sock is None:
            return
        self._stopping.set()
        try:  # wake the blocking recvfrom at once instead of waiting for its timeout
            sock.sendto(b"", (_wake_host(self.host), sock.getsockname()[1]))
        except OSError:
            pass
        if thread is not threading.current_thread():
            thread.join(timeout)
        sock.close()
        self._thread = self._sock = None
        log.info("OSC server stopped")

    def __enter__(self) -> OscServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> Address:
        """The bound (host, port), with the real port when 0 was asked for."""
        if self._address is None:
            raise RuntimeError("the OSC server is not started")
        return self._address

    @property
    def running(self) -> bool:
        """Whether the server thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------ replies

    def destinations(self, source: Address) -> list[Address]:
        """Where replies to a request from ``source`` go: the sender alone when its own address is one of
        its host's subscriptions (so several clients on one host, each sending from the port it subscribed,
        such as several plugin instances, get only their own replies), else the host's subscriptions, else
        the configured reply port on the sender's host, else the sender's own address."""
        with self._lock:
            subscribed = list(self._subscriptions.get(source[0], ()))
        if tuple(source[:2]) in subscribed:
            return [tuple(source[:2])]
        if subscribed:
            return subscribed
        if self.reply_port is not None:
            return [(source[0], self.reply_port)]
        return [source]

    def subscribers(self) -> list[Address]:
        """Every subscribed reply address."""
        with self._lock:
            return [a for addresses in self._subscriptions.values() for a in addresses]

    def broadcast(self, address: str, *args: Any) -> None:
        """Send a reply to every subscribed address (nothing when there are none)."""
        self._send(encode_reply(address, *args), self.subscribers())

    def _send(self, data: bytes, destinations: list[Address]) -> None:
        sock = self._sock
        if sock is None:
            log.debug("OSC server stopped; reply to %s dropped", destinations)
            return
        for destination in destinations:
            try:
                sock.sendto(data, destination)
            except OSError as exc:
                log.warning("cannot send OSC reply to %s:%d: %s", destination[0], destination[1], exc)

    # ------------------------------------------------------------ the loop

    def _serve(self) -> None:
        sock = self._sock
        while sock is not None and not self._stopping.is_set():
            try:
                data, source = sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError as exc:  # Windows reports an earlier reply's ICMP "port unreachable" here
                if self._stopping.is_set():
                    break
                log.debug("OSC receive error ignored: %s", exc)
                continue
            if self._stopping.is_set():
                break
            try:
                self.handle_datagram(data, source[:2])
            except Exception:  # the loop must survive anything, even a bug of ours
                log.exception("OSC datagram from %s:%d crashed the dispatcher", *source[:2])

    def handle_datagram(self, data: bytes, source: Address) -> None:
        """Serve one datagram as if it came from ``source`` (the loop calls this; tests may too)."""
        if not self._allowed(source[0]):
            return
        replier = Replier(self, source)
        try:
            packet = decode_packet(data)
        except MalformedPacket as exc:
            log.warning("malformed OSC packet from %s:%d (%d bytes): %s", *source, len(data), exc)
            replier.error(-1, "malformed", str(exc))
            return
        for message, timetag in iter_messages(packet):
            self._dispatch(message, timetag, source, replier)

    def _dispatch(self, message: Message, timetag: int | None, source: Address, replier: Replier) -> None:
        try:
            command = to_command(message, source, timetag_to_unix(timetag))
        except RequestError as exc:
            log.warning("OSC request from %s:%d refused (%s): %s", *source, exc.code, exc.message)
            replier.error(-1, exc.code, exc.message)
            return
        log.debug("OSC %s %s from %s:%d", command.address, dict(command.args), *source)
        builtin = _BUILTINS.get(command.name)
        try:
            if builtin is not None:
                builtin(self, command, replier)
            elif self.handler is None:
                replier.error(-1, "unavailable", f"{command.address}: no engine is attached yet")
            else:
                self.handler(command, replier)
        except RequestError as exc:  # the application (or a built-in) refused the request
            text = exc.message if exc.message.startswith(command.address) else f"{command.address}: {exc.message}"
            log.warning("OSC request from %s:%d refused (%s): %s", *source, exc.code, text)
            replier.error(-1, exc.code, text)
        except Exception as exc:
            log.exception("OSC handler failed on %s from %s:%d", command.address, *source)
            code = getattr(exc, "code", None)
            code = code if isinstance(code, str) and _CODE.fullmatch(code) else "internal"
            replier.error(-1, code, f"{command.address}: {exc or type(exc).__name__}")

    # ------------------------------------------------------------ built-in requests

    def _ping(self, command: Command, replier: Replier) -> None:
        token = command.args["token"]
        replier.send("/dd/pong", *(() if token is None else (token,)))

    def _subscribe(self, command: Command, replier: Replier) -> None:
        sender = command.source[0]
        host = _resolve(str(command.args["host"] or sender))
        if host != sender and not self._may_receive(host):
            allowed = "the allow-list" if self._allow is not None else "loopback addresses"
            raise RequestError("not_allowed", f"{command.address}: host {host} is not the sender and not in {allowed}")
        target = (host, int(command.args["port"]))  # type: ignore[arg-type]
        with self._lock:
            targets = self._subscriptions.setdefault(sender, [])
            if target not in targets:
                if sum(len(t) for t in self._subscriptions.values()) >= MAX_SUBSCRIPTIONS:
                    if not targets:
                        del self._subscriptions[sender]
                    raise RequestError("not_allowed", f"{command.address}: at most {MAX_SUBSCRIPTIONS} subscriptions")
                targets.append(target)
        log.info("OSC replies for %s now go to %s:%d", sender, *target)
        self._send(encode_reply("/dd/subscribed", *target), [target])

    def _unsubscribe(self, command: Command, replier: Replier) -> None:
        port = command.args["port"]
        with self._lock:
            targets = self._subscriptions.pop(command.source[0], [])
            kept = [t for t in targets if port is not None and t[1] != port]
            if kept:
                self._subscriptions[command.source[0]] = kept
        log.info("OSC subscriptions of %s removed: %d", command.source[0], len(targets) - len(kept))
        replier.send("/dd/unsubscribed", len(targets) - len(kept))

    # ------------------------------------------------------------ who may talk

    def _allowed(self, host: str) -> bool:
        if self._allow is None or _in_networks(host, self._allow):
            return True
        now = time.monotonic()
        if len(self._last_drop_log) > 1024:  # many spoofed sources: forget them rather than grow
            self._last_drop_log.clear()
        last, dropped = self._last_drop_log.get(host, (-_DROP_LOG_INTERVAL, 0))
        if now - last >= _DROP_LOG_INTERVAL:
            more = f" ({dropped} more since the last report)" if dropped else ""
            log.warning("OSC packet from %s dropped: not in the allow-list%s", host, more)
            self._last_drop_log[host] = (now, 0)
        else:
            self._last_drop_log[host] = (last, dropped + 1)
        return False

    def _may_receive(self, host: str) -> bool:
        if self._allow is None:
            return _is_loopback(host)
        return _in_networks(host, self._allow)


_BUILTINS: dict[str, Callable[[OscServer, Command, Replier], None]] = {
    "ping": OscServer._ping,
    "subscribe": OscServer._subscribe,
    "unsubscribe": OscServer._unsubscribe,
}


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"allow-list entries must be IP addresses or networks like 192.168.1.0/24, got {text!r}") from None


def _in_networks(host: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise RequestError("bad_value", f"host must be an IP address, got {host!r}") from None


def _wake_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _tune(sock: socket.socket) -> None:
    sock.settimeout(0.5)  # only bounds how long stop() can wait; data wakes recvfrom at once
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # absorb bursts of pad hits
    except OSError:
        pass
    if hasattr(socket, "SIO_UDP_CONNRESET"):  # Windows: don't turn "port unreachable" into recv errors
        try:
            sock.ioctl(socket.SIO_UDP_CONNRESET, False)  # type: ignore[attr-defined]
        except OSError:
            pass
