"""ONNX Runtime execution providers and session options: pick the best one, or the one asked for.

Preference is CUDA, then DirectML (Windows), then CoreML (macOS), then the CPU. A provider can be forced
with the backend's ``device`` argument or the ``DD_COMPANION_ORT_PROVIDER`` environment variable; one that
this ONNX Runtime build lacks is not an error: the session falls back to the CPU and says so, because a
desktop app should still make sounds on a machine without the right GPU libraries.

CPU session options are the measured best on this project's reference CPU (see the runtime facts):
intra-op threads = physical cores, one inter-op thread, sequential execution, ``ORT_ENABLE_ALL``
applied at load time (never saved: the optimised graph is hardware-specific), spinning left on
(turning it off was 15% slower).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort

from models.errors import ConfigError

log = logging.getLogger("dd.export")

ENV_PROVIDER = "DD_COMPANION_ORT_PROVIDER"
PROVIDERS: dict[str, str] = {
    "cuda": "CUDAExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
PREFERENCE = ("cuda", "directml", "coreml", "cpu")
# the torch-style device names the rest of the companion uses, mapped onto providers
ALIASES = {"gpu": "cuda", "dml": "directml", "mps": "coreml"}


@dataclass(frozen=True)
class ProviderChoice:
    """The provider a session will use, with its options, and why (``note`` explains any fallback)."""

    name: str  # short name: one of PROVIDERS
    options: dict[str, Any] = field(default_factory=dict)
    requested: str = "auto"
    note: str = ""

    @property
    def provider(self) -> str:
        return PROVIDERS[self.name]

    @property
    def device(self) -> str:
        device_id = self.options.get("device_id")
        return self.name if device_id in (None, 0) else f"{self.name}:{device_id}"

    def providers_argument(self) -> list[tuple[str, dict[str, Any]]]:
        """The ``providers`` list for ``InferenceSession``: the choice, with the CPU behind it."""
        chosen = [(self.provider, dict(self.options))]
        return chosen if self.name == "cpu" else chosen + [(PROVIDERS["cpu"], {})]


def available_providers() -> list[str]:
    """Short names of the providers this ONNX Runtime build offers, best first."""
    offered = set(ort.get_available_providers())
    return [name for name in PREFERENCE if PROVIDERS[name] in offered]


def parse_request(requested: str | None) -> tuple[str, int | None]:
    """Split a request like ``cuda:1`` into a provider short name and a device index."""
    text = (requested or "auto").strip().lower()
    base, _, index = text.partition(":")
    base = ALIASES.get(base, base)
    allowed = ["auto", *PREFERENCE, "cuda:N", *ALIASES]
    if base != "auto" and base not in PROVIDERS:
        raise ConfigError(f"ONNX Runtime device must be one of {allowed}, got '{requested}'")
    if index:
        if base not in ("cuda", "directml") or not index.isdigit():
            raise ConfigError(f"device index is only allowed as cuda:N or directml:N, got '{requested}'")
        return base, int(index)
    return base, None


def choose_provider(requested: str | None = "auto", available: list[str] | None = None) -> ProviderChoice:
    """The provider for ``requested`` (``auto`` = best available; the environment variable may force one).

    A requested provider that is not available gives the CPU, with a ``note`` (also logged) saying so.
    """
    if requested in (None, "", "auto") and os.environ.get(ENV_PROVIDER):
        requested = os.environ[ENV_PROVIDER]
    base, index = parse_request(requested)
    offered = available_providers() if available is None else list(available)
    options: dict[str, Any] = {} if index is None else {"device_id": index}
    if base == "auto":
        best = next((name for name in PREFERENCE if name in offered), "cpu")
        return ProviderChoice(best, {}, "auto")
    if base in offered:
        return ProviderChoice(base, options, str(requested))
    note = (f"ONNX Runtime provider '{base}' ({PROVIDERS[base]}) was requested but this onnxruntime build "
            f"offers only {offered or ['cpu']}; running on the CPU instead")
    if base == "cuda":
        note += " (install the onnxruntime-gpu package instead of onnxruntime, with CUDA 12 and cuDNN 9)"
    log.warning(note)
    return ProviderChoice("cpu", {}, str(requested), note)


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads counted once); at least 1."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = list(range(os.cpu_count() or 1))
    groups: set[str] = set()
    for cpu in allowed:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            groups.add(siblings.read_text().strip())
        except OSError:
            groups.add(str(cpu))  # no topology (macOS, Windows): count logical CPUs
    return max(1, len(groups))


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """The measured best CPU settings; ``threads`` overrides the intra-op thread count."""
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer, got {threads!r}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or physical_cores()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
    opts.log_severity_level = 3  # errors only: ORT's own warnings about unused initialisers are noise here
    return opts


def create_session(model: str | Path | bytes, choice: ProviderChoice,
                   threads: int | None = None) -> tuple[ort.InferenceSession, ProviderChoice]:
    """An ``InferenceSession`` on ``choice``; if the provider fails to start, the CPU, with a note saying so."""
    source = str(model) if isinstance(model, Path) else model
    session = ort.InferenceSession(source, sess_options=session_options(threads),
                                   providers=choice.providers_argument())
    active = session.get_providers()
    if choice.name != "cpu" and (not active or active[0] != choice.provider):
        # e.g. onnxruntime-gpu without the CUDA libraries: ORT quietly drops to the CPU; say it aloud
        note = (f"ONNX Runtime provider '{choice.name}' is installed but failed to start (missing GPU "
                f"libraries or driver?); running on the CPU instead")
        log.warning(note)
        choice = ProviderChoice("cpu", {}, choice.requested, note)
    return session, choice
