"""The resident companion: everything ``serve`` (and the window) runs, built from settings.

Model, engine, pre-render pool, watched folder, OSC server and bridge, the OSCQuery (HTTP) namespace
beside the OSC port with its mDNS advertisement when wanted, and the live rig when the
settings ask for it (``live = 1``: MIDI pads with the pad map of the settings' ``[pads]`` table, and
the audio output). :meth:`Companion.save_settings` writes the settings in effect, MIDI-learned pad
bindings included, so that a restart comes back the same.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from companion.config.padmap import default_config
from companion.config.settings import Settings, save_settings
from companion.engine.engine import Engine
from companion.engine.pool import Pool
from companion.output.folder import SampleFolder, default_output_folder
from companion.service import mdns
from companion.service.osc_bridge import OscBridge
from companion.service.oscquery import NAME, OscQueryServer, live_snapshot
from osc_protocol.server import OscServer

log = logging.getLogger("dd.serve")


class Companion:
    """Everything ``serve`` runs, built from settings; ``start`` then ``stop`` (tests use it in-process)."""

    def __init__(self, settings: Settings, *, settings_file: str | Path | None = None,
                 rig_options: Mapping[str, Any] | None = None) -> None:
        """``settings.live`` says whether ``start`` builds the live rig (MIDI port, audio device and pad
        map from ``settings``); ``rig_options`` are further :class:`companion.live.rig.LiveRig` options
        (tests: ``virtual_name``, ``poll_interval``...). ``settings_file``: where :meth:`save_settings`
        writes by default (None: the default settings file)."""
        self.settings = settings
        self.settings_file = settings_file
        self.rig_options = dict(rig_options or {})
        self.live: Any = None
        root = Path(settings.folder).expanduser() if settings.folder else default_output_folder()
        self.folder = SampleFolder(root, rate=settings.rate, subtype="FLOAT" if settings.format == "float" else "PCM_24",
                                   max_per_category=settings.max_per_category or None)
        self.load_options = {"backend": settings.backend, "device": settings.device, "precision": settings.precision}
        self.engine = Engine(self.folder, params=settings.params(), queue_limit=settings.queue_limit)
        self.pool = Pool(self.engine, settings.pool_categories)
        self.bridge = OscBridge(self.engine, self.pool, load_options=self.load_options)
        self.server = OscServer(settings.osc_host, settings.osc_port, reply_port=settings.reply_port,
                                allow=settings.allow or None)
        self.oscquery: OscQueryServer | None = None
        self.advertiser: mdns.Advertiser | None = None
        self.advertiser_wanted = mdns.wanted(settings.mdns, settings.osc_host)
        if self.advertiser_wanted:
            try:
                mdns.require()
            except mdns.MdnsUnavailable as exc:
                if settings.mdns:  # asked for: an error now, naming the install line
                    raise ValueError(str(exc)) from None
                log.warning("%s; the companion is not advertised", exc)
                self.advertiser_wanted = False

    def start(self) -> None:
        """Prepare the folder, load the model (errors propagate), start the engine, the pool and OSC."""
        try:
            self.folder.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # keep serving: every job will report folder_unwritable until it is fixed
            log.error("output folder %s cannot be created: %s", self.folder.root, exc)
        removed = self.folder.cleanup_stale_temporaries()
        if removed:
            log.info("removed %d stale temporary file(s) from %s", removed, self.folder.root)
        self.engine.load(self.settings.model, **self.load_options)
        self.engine.start()
        self.pool.start()
        if self.settings.live:
            from companion.live.rig import attach_live  # MIDI and audio libraries load only when asked for

            self.live = attach_live(self.engine, self.folder, midi_port=self.settings.midi_port,
                                    audio_device=self.settings.audio_device, pads=self.settings.pads,
                                    **self.rig_options)
            self.bridge.rack = self.live.rack
        self.bridge.attach(self.server)
        self.server.start()
        self._start_oscquery()
        if self.advertiser_wanted:
            name = f"{NAME} on {socket.gethostname().split('.')[0]}"
            http_port = self.oscquery.address[1] if self.oscquery is not None else None
            self.advertiser = mdns.Advertiser(name, self.server.host, self.server.address[1], http_port)
            self.advertiser.start()

    def _start_oscquery(self) -> None:
        """OSCQuery on the configured port, else the OSC port + 1 (any free port if that one is taken)."""
        wanted = self.settings.oscquery_port
        if wanted == -1:
            return
        port = self.server.address[1] + 1 if wanted is None else wanted
        server = OscQueryServer(self.server, port if port <= 65535 else 0, lambda: live_snapshot(self.engine, self.pool))
        try:
            server.start()
        except OSError as exc:
            if wanted is not None or exc.errno != errno.EADDRINUSE:
                raise
            log.warning("%s; OSCQuery takes any free port instead", exc)
            server = OscQueryServer(self.server, 0, server.live)
            server.start()
        self.oscquery = server

    def stop(self) -> None:
        """Stop taking requests, cancel jobs, let writes in progress finish."""
        if self.advertiser is not None:
            self.advertiser.stop()
        if self.oscquery is not None:
            self.oscquery.stop()
        self.server.stop()
        if self.live is not None:
            self.live.stop()
        self.engine.shutdown()

    def settings_in_effect(self) -> Settings:
        """The settings as they are now: parameters changed at run time (``/dd/set``), the audio
        device chosen since, the pad map with its MIDI-learned bindings (unset while it is the default)."""
        settings = replace(self.settings, **asdict(self.engine.params))
        if self.live is not None:
            pads: dict[str, Any] | None = self.live.rack.to_config()
            if self.settings.pads is None and pads == default_config():
                pads = None
            settings = settings.updated({"audio_device": self.live.audio.device_name, "pads": pads})
        return settings

    def save_settings(self, path: str | Path | None = None) -> Path:
        """Write :meth:`settings_in_effect` to ``path`` (default: the file given at construction, else
        the default settings file) so that a restart comes back the same; returns the path."""
        return save_settings(self.settings_in_effect(), path if path is not None else self.settings_file)

    def describe(self) -> list[str]:
        host, port = self.server.address
        model = self.engine.model
        replies = f"port {self.settings.reply_port} of the sender" if self.settings.reply_port else "the sender"
        pool = self.engine.params.pool_size
        return [
            f"OSC on udp://{host}:{port} (replies to {replies}; receive buffer {self.server.buffer_text()}; "
            "protocol: docs/OSC.md)",
            f"OSCQuery on {self.oscquery.url} (namespace: curl {self.oscquery.url}; docs/oscquery.md)"
            if self.oscquery is not None else "OSCQuery: off",
            (f"mDNS: advertising {' and '.join(t.split('.')[0] + '.' + t.split('.')[1] for t in self.advertiser.types)}"
             if self.advertiser is not None
             else "mDNS: off" + (" (listening on loopback only; --mdns to advertise)" if self.settings.mdns is None else "")),
            f"output folder: {self.folder.root}",
            f"model: {model.name} on {model.runtime} ({', '.join(model.categories) or 'unconditional'})",
            f"pool: {pool} per category" if pool else "pool: off",
        ] + (list(self.live.describe()) if self.live is not None else [])
