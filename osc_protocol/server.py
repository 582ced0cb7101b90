"""The OSC server: one thread with a blocking UDP socket that decodes, validates and hands off.

It answers ``/dd/ping`` and the reply subscriptions itself; every other valid request becomes a
``Command`` for the application's handler, which runs in the server thread and must return fast
(it submits work to the engine and replies later through the ``Replier``). Nothing a client sends
can stop the loop, and nothing it sends costs much: refusals are logged on "dd.osc" at most once
per source and reason per interval (with the count of those suppressed), and the ``/dd/error`` of a
malformed or invalid packet goes out at once for a client's first few, then at a bounded rate per
source and overall, so a flood of garbage is drained fast and valid requests among it are answered.
Bundles are unpacked and executed at once, whatever their timetag (see docs/OSC.md).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
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
from osc_protocol.ratelimit import LogLimiter, TokenBucket
from osc_protocol.table import DEFAULT_HOST, DEFAULT_PORT, MAX_SUBSCRIPTIONS

log = logging.getLogger("dd.osc")

Address = tuple[str, int]
Handler = Callable[[Command, "Replier"], None]
_CODE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_DROP_LOG_INTERVAL = 5.0  # seconds between log lines about one source and reason
RECEIVE_BUFFER = 8 << 20  # bytes asked of the OS for the receive buffer: about 10,000 small datagrams on Linux
# /dd/error replies to refused packets (malformed, or not a valid request): per source (host, port) the
# first few at once, then a steady trickle, and a cap over all sources; a flood is mostly left unanswered
ERROR_BURST, ERROR_RATE = 10, 5.0
ERRORS_BURST_ALL, ERRORS_RATE_ALL = 100, 100.0


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
        self._log_limit = LogLimiter(_DROP_LOG_INTERVAL)
        self._error_limit = TokenBucket(ERROR_RATE, ERROR_BURST)
        self._errors_all = TokenBucket(ERRORS_RATE_ALL, ERRORS_BURST_ALL)
        self.receive_buffer: int | None = None  # what the OS granted (bytes), once started

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
        self.receive_buffer = _tune(sock)
        self._sock = sock
        self._address = sock.getsockname()[:2]
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="dd-osc-server", daemon=True)
        self._thread.start()
        log.info("OSC server listening on %s:%d (receive buffer %s)", *self._address, self.buffer_text())
        if self.receive_buffer is not None and self.receive_buffer < RECEIVE_BUFFER:
            log.warning("the OS granted an OSC receive buffer of %s of the %s asked for: bursts of packets may "
                        "be lost (Linux: sysctl -w net.core.rmem_max=%d)", _size(self.receive_buffer),
                        _size(RECEIVE_BUFFER), RECEIVE_BUFFER)

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

    def buffer_text(self) -> str:
        """The receive buffer granted, in words (e.g. ``8 MiB``)."""
        return "unknown" if self.receive_buffer is None else _size(self.receive_buffer)

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
        """Serve one datagram as if it came from ``source`` (the loop calls this; tests may too).

        Kept lean for floods: a refused datagram costs a decode attempt and two dictionary look-ups;
        its log line and its ``/dd/error`` are rate-limited (see ``_refuse``)."""
        if self._allow is not None and not self.allows(source[0]):
            return
        try:
            packet = decode_packet(data)
        except MalformedPacket as exc:
            self._refuse(source, "malformed", f"{exc} ({len(data)} bytes)")
            return
        replier = Replier(self, source)
        if isinstance(packet, Message):
            self._dispatch(packet, None, source, replier)
            return
        for message, timetag in iter_messages(packet):
            self._dispatch(message, timetag, source, replier)

    def _refuse(self, source: Address, code: str, text: str, limited: bool = True) -> None:
        """Log a refusal (one line per host and code per interval, with the count suppressed) and answer
        it with ``/dd/error -1``; ``limited`` answers go through the per-source and overall budgets."""
        suppressed = self._log_limit.due((source[0], code))
        if suppressed is not None:
            more = f" ({suppressed} more from {source[0]} since the last report)" if suppressed else ""
            log.warning("OSC request from %s:%d refused (%s): %s%s", *source, code, text, more)
        if limited and not (self._error_limit.take(source) and self._errors_all.take(None)):
            return
        Replier(self, source).error(-1, code, text)

    def _dispatch(self, message: Message, timetag: int | None, source: Address, replier: Replier) -> None:
        try:
            command = to_command(message, source, timetag_to_unix(timetag))
        except RequestError as exc:
            self._refuse(source, exc.code, exc.message)
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("OSC %s %s from %s:%d", command.address, dict(command.args), *source)
        builtin = _BUILTINS.get(command.name)
        try:
            if builtin is not None:
                builtin(self, command, replier)
            elif self.handler is None:
                replier.error(-1, "unavailable", f"{command.address}: no engine is attached yet")
            else:
                self.handler(command, replier)
        except RequestError as exc:  # the application (or a built-in) refused a well-formed request
            text = exc.message if exc.message.startswith(command.address) else f"{command.address}: {exc.message}"
            self._refuse(source, exc.code, text, limited=False)
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

    def allows(self, host: str, what: str = "OSC packet") -> bool:
        """Whether ``host`` may talk to the companion (the allow-list, when there is one); a refusal is
        logged at most once per host and ``what`` per interval. The OSCQuery server asks this too."""
        if self._allow is None or _in_networks(host, self._allow):
            return True
        suppressed = self._log_limit.due((host, what))
        if suppressed is not None:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            log.warning("%s from %s dropped: not in the allow-list%s", what, host, more)
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


def _tune(sock: socket.socket) -> int | None:
    """Set the socket up for the loop; return the receive buffer the OS granted (None if unknown)."""
    sock.settimeout(0.5)  # only bounds how long stop() can wait; data wakes recvfrom at once
    size = RECEIVE_BUFFER
    while size >= 1 << 18:  # absorb bursts (pad hits, a misbehaving script) while the loop catches up
        try:  # macOS refuses a size above kern.ipc.maxsockbuf outright: try smaller ones
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            break
        except OSError:
            size //= 2
    try:
        granted: int | None = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    except OSError:
        granted = None
    if hasattr(socket, "SIO_UDP_CONNRESET"):  # Windows: don't turn "port unreachable" into recv errors
        try:
            sock.ioctl(socket.SIO_UDP_CONNRESET, False)  # type: ignore[attr-defined]
        except OSError:
            pass
    return granted


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"
