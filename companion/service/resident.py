"""The resident companion: everything ``serve`` (and the window) runs, built from settings.

Model, engine, pre-render pool, watched folder, OSC server and bridge, and the live rig when the
settings ask for it (``live = 1``: MIDI pads with the pad map of the settings' ``[pads]`` table, and
the audio output). :meth:`Companion.save_settings` writes the settings in effect, MIDI-learned pad
bindings included, so that a restart comes back the same.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from companion.config.padmap import default_config
from companion.config.settings import Settings, save_settings
from companion.engine.engine import Engine
from companion.engine.pool import Pool
from companion.output.folder import SampleFolder, default_output_folder
from companion.service.osc_bridge import OscBridge
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

    def stop(self) -> None:
        """Stop taking requests, cancel jobs, let writes in progress finish."""
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
            f"OSC on udp://{host}:{port} (replies to {replies}; protocol: docs/OSC.md)",
            f"output folder: {self.folder.root}",
            f"model: {model.name} on {model.runtime} ({', '.join(model.categories) or 'unconditional'})",
            f"pool: {pool} per category" if pool else "pool: off",
        ] + (list(self.live.describe()) if self.live is not None else [])
