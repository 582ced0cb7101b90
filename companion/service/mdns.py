"""mDNS / DNS-SD advertisement of the companion: ``_oscjson._tcp`` (OSCQuery) and ``_osc._udp`` (OSC).

Controllers that browse for OSCQuery servers (TouchDesigner, ossia score, Chataigne, VRChat tools)
then find the companion without typing an address. It uses the ``zeroconf`` package (pure Python);
registering probes the network for a second or two, so it runs on its own thread and ``serve`` is
ready meanwhile. Listening on one address advertises that address; on 0.0.0.0 / :: every address of
the machine's interfaces; on loopback (only when asked for) 127.0.0.1, for browsers on this machine.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from typing import Any

log = logging.getLogger("dd.mdns")

OSCQUERY_TYPE = "_oscjson._tcp.local."
OSC_TYPE = "_osc._udp.local."
INSTALL = "pip install zeroconf (or: pip install 'dd-companion[mdns]')"


class MdnsUnavailable(RuntimeError):
    """The zeroconf package is missing."""


def require() -> Any:
    """The zeroconf module, or ``MdnsUnavailable`` naming the install line."""
    try:
        import zeroconf
    except ImportError as exc:
        raise MdnsUnavailable(f"mDNS advertisement needs the zeroconf package ({exc}): {INSTALL}") from None
    return zeroconf


class Advertiser:
    """Advertises ``name`` with its OSC (UDP) and OSCQuery (TCP) ports on the addresses for ``host``
    (``http_port`` None: OSCQuery is off, only ``_osc._udp`` is advertised)."""

    def __init__(self, name: str, host: str, osc_port: int, http_port: int | None) -> None:
        self._zc_module = require()  # fail at construction, naming the install line
        self.name = name
        self.host = host
        self.osc_port = osc_port
        self.http_port = http_port
        self._zc: Any = None
        self._infos: list[Any] = []
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.registered = threading.Event()
        self.types = ((OSCQUERY_TYPE,) if http_port is not None else ()) + (OSC_TYPE,)

    def start(self) -> None:
        """Register both services on a thread (probing takes a moment)."""
        self._thread = threading.Thread(target=self._register, name="dd-mdns", daemon=True)
        self._thread.start()

    def _register(self) -> None:
        zc_mod = self._zc_module
        addresses = advertised_addresses(self.host)
        loopback = all(ipaddress.ip_address(a).is_loopback for a in addresses)
        interfaces = addresses if loopback else zc_mod.InterfaceChoice.All
        packed = [socket.inet_pton(socket.AF_INET6 if ":" in a else socket.AF_INET, a) for a in addresses]
        server = f"{socket.gethostname().split('.')[0] or 'dd-companion'}.local."
        ports = {OSCQUERY_TYPE: self.http_port, OSC_TYPE: self.osc_port}
        infos = [zc_mod.ServiceInfo(kind, f"{self.name}.{kind}", addresses=packed, port=ports[kind],
                                    properties={"txtvers": "1"}, server=server) for kind in self.types]
        try:
            with self._lock:
                self._zc = zc_mod.Zeroconf(interfaces=interfaces)
            for info in infos:
                self._zc.register_service(info, allow_name_change=True)
                self._infos.append(info)
        except Exception as exc:  # no multicast route, a name clash...: OSC and OSCQuery go on without it
            log.warning("mDNS advertisement failed: %s", exc)
            return
        log.info("mDNS: advertising %s as %s on %s", self.name,
                 " and ".join(f"{kind} (port {ports[kind]})" for kind in self.types), ", ".join(addresses))
        self.registered.set()

    def services(self) -> dict[str, str]:
        """Service type -> the instance name registered (it may have been renamed to avoid a clash)."""
        return {info.type: info.name for info in self._infos}

    def stop(self) -> None:
        """Withdraw the services (a goodbye packet) and close."""
        if self._thread is not None:
            self._thread.join(5.0)
        with self._lock:
            zc, self._zc = self._zc, None
        if zc is None:
            return
        try:
            zc.unregister_all_services()
        finally:
            zc.close()


def advertised_addresses(host: str) -> list[str]:
    """The IP addresses to advertise for a listening ``host``."""
    if host == "localhost":
        return ["127.0.0.1"]
    if host not in ("0.0.0.0", "::", ""):
        return [host]
    import ifaddr  # a dependency of zeroconf

    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback:
                found.append(ip.ip)
    return found or ["127.0.0.1"]


def wanted(setting: int | None, host: str) -> bool:
    """Whether to advertise: the ``mdns`` setting when given, else only when listening beyond loopback."""
    if setting is not None:
        return bool(setting)
    try:
        return not (host == "localhost" or ipaddress.ip_address(host).is_loopback)
    except ValueError:
        return True
