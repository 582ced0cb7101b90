"""Helpers for the plugin tests: build the plugin, run a real ``dd-companion serve``, host the VST3 in pedalboard.

The companion runs as a subprocess on a free loopback port with the shipped default model and a fast setting
(4 steps, 0.3 s sounds, no pre-render pool) so a pad's stock fills in about a second on two slow cores. The
plugin's saved state is read the way a DAW would store it: pedalboard's ``raw_state`` (JUCE's VST3 state: XML
around JUCE's base64 of DPF's NUL-separated keys and values).
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = REPO / "plugin"
BIN = PLUGIN_DIR / "bin"
VST3 = BIN / "dd-companion.vst3"
RATE = 44100  # the default model's rate: no resampling, so output == file * gain exactly
BLOCK = 512
APT = "apt-get install -y --no-install-recommends dpf-source liblo-dev libsndfile1-dev libsoxr-dev libjack-jackd2-dev"
FAST = ("--steps", "4", "--seconds", "0.3", "--pool-size", "0")

_built = False


def build() -> None:
    """Build the plugin (DPF's make; quick when it is up to date); fail naming the packages it needs."""
    global _built
    if _built:
        return
    if not Path("/usr/share/dpf/Makefile.plugins.mk").is_file():
        raise AssertionError(f"DPF is not installed: {APT}")
    done = subprocess.run(["make", "-C", str(PLUGIN_DIR), "-j2", "-s"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"make -C plugin failed (packages: {APT}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    _built = True


def load_vst3():
    try:
        import pedalboard
    except ImportError as exc:  # a missing host is a failure, never a skip
        raise AssertionError("pedalboard is not installed: pip install 'pedalboard==0.9.26' (the dev extra)") from exc
    build()
    # pedalboard introspects every parameter (DPF's VST3 adds 16 x 130 MIDI CC ones): ~17 s per load here
    return pedalboard.load_plugin(str(VST3), initialization_timeout=1.0)


class Companion:
    """A real ``dd-companion serve`` subprocess; ``stop()`` and ``start()`` again on the same port."""

    def __init__(self, folder: Path, *extra: str, port: int = 0, fast: bool = True) -> None:
        self.folder = folder
        self.extra = (*FAST, *extra) if fast else extra
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        config = self.folder.parent / "settings.json"  # empty: the user's own settings file stays out of it
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text("{}", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "companion", "serve", "--config", str(config),
             "--folder", str(self.folder), "--osc-port", str(self.port), "--no-live", "--device", "cpu",
             *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO,
        )
        lines = []
        for line in self.proc.stdout:
            lines.append(line)
            if "ready" in line:
                break
        found = next((int(m.group(1)) for x in lines if (m := re.search(r"OSC on udp://127\.0\.0\.1:(\d+)", x))), None)
        assert found, "dd-companion serve did not start:\n" + "".join(lines)
        self.port = found
        self.log = collections.deque(lines, maxlen=200)  # its log keeps flowing: read it, or serve blocks on a full pipe
        threading.Thread(target=self._drain, args=(self.proc, self.log), daemon=True).start()

    @staticmethod
    def _drain(proc: subprocess.Popen, log: collections.deque) -> None:
        for line in proc.stdout:
            log.append(line)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# ------------------------------------------------------------------ the plugin's state, as the DAW saves it

_JUCE64 = ".ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+"


def _juce_base64_decode(text: str) -> bytes:
    size_text, _, data = text.partition(".")
    out = bytearray(int(size_text))
    for index, char in enumerate(data):
        value = _JUCE64.index(char)
        for bit in range(6):
            if value & (1 << bit):
                byte, shift = divmod(index * 6 + bit, 8)
                if byte < len(out):
                    out[byte] |= 1 << shift
    return bytes(out)


def _juce_base64_encode(data: bytes) -> str:
    bits = len(data) * 8
    chars = []
    for index in range((bits + 5) // 6):
        value = 0
        for bit in range(6):
            byte, shift = divmod(index * 6 + bit, 8)
            if byte < len(data) and data[byte] & (1 << shift):
                value |= 1 << bit
        chars.append(_JUCE64[value])
    return f"{len(data)}." + "".join(chars)


def set_state(plugin, **keys: str) -> None:
    """Restore the plugin's saved state with some DPF state keys changed, as a DAW re-opening an edited project."""
    match = re.search(rb"<IComponent>(.*?)</IComponent>", plugin.raw_state)
    blob = _juce_base64_decode(match.group(1).decode("ascii"))
    fields = blob.split(b"\0")
    for key, value in keys.items():
        index = fields.index(key.encode())
        fields[index + 1] = value.encode()
    encoded = _juce_base64_encode(b"\0".join(fields)).encode("ascii")
    raw = plugin.raw_state
    xml = raw[raw.index(b"<?xml"):raw.rindex(b">") + 1].replace(match.group(1), encoded)
    plugin.raw_state = raw[:4] + len(xml + b"\0").to_bytes(4, "little") + xml + b"\0"


def dpf_state(plugin) -> dict[str, str]:
    """The plugin's DPF state keys and parameter values, from the host's saved state."""
    match = re.search(rb"<IComponent>(.*?)</IComponent>", plugin.raw_state)
    assert match, plugin.raw_state[:200]
    fields = _juce_base64_decode(match.group(1).decode("ascii")).split(b"\0")
    out: dict[str, str] = {}
    tokens = iter(fields)
    for key in tokens:
        if key.startswith(b"__dpf") or key in (b"", b"\xfe"):  # section markers and the end mark
            continue
        out[key.decode()] = next(tokens, b"").decode("utf-8")
    return out


def stocked(plugin) -> dict[int, list[str]]:
    """note -> files in its stock now (the read-only ``status`` state key)."""
    lines = dpf_state(plugin)["status"].splitlines()[1:]
    out: dict[int, list[str]] = {}
    for line in lines:
        note, path = line.split("\t", 1)
        out.setdefault(int(note), []).append(path)
    return out


def status_line(plugin) -> str:
    return dpf_state(plugin)["status"].splitlines()[0]


def current(plugin) -> dict[int, tuple[str, str]]:
    """note -> (file, recipe) of the sound each pad plays now (the ``pads`` state key)."""
    text = dpf_state(plugin)["pads"]
    out = {}
    for line in text.splitlines()[1:]:
        note, path, recipe = line.split("\t", 2)
        out[int(note)] = (path, recipe)
    return out


# ------------------------------------------------------------------ rendering

def render(plugin, seconds: float, notes=(), rate: int = RATE) -> np.ndarray:
    """Render ``seconds`` with note-ons/CCs at exact frames: ``notes`` = [(frame, note, velocity)] or mido messages."""
    import mido

    messages = []
    for item in notes:
        if isinstance(item, mido.Message):
            messages.append(item)
        else:
            frame, note, velocity = item
            messages.append(mido.Message("note_on", note=note, velocity=velocity, time=(frame + 0.25) / rate))
    return plugin(messages, duration=seconds, sample_rate=rate, num_channels=2, buffer_size=BLOCK, reset=False)


def wait_until(plugin, condition, timeout: float = 90.0, rate: int = RATE) -> None:
    """Render silent blocks (the host keeps running) while waiting in wall time for ``condition(plugin)``."""
    deadline = time.monotonic() + timeout
    while True:
        out = render(plugin, 0.05, rate=rate)
        assert not np.any(out), "a plugin with no note must be silent"
        if condition(plugin):
            return
        assert time.monotonic() < deadline, f"timed out; plugin status: {dpf_state(plugin).get('status')}"
        time.sleep(0.1)


def has_stock(*notes: int, count: int = 1):
    return lambda plugin: all(len(stocked(plugin).get(n, [])) >= count for n in notes)


def gain(velocity: int) -> np.float32:
    v = np.float32(velocity) / np.float32(127)
    return v * v


def read_wav(path: str) -> np.ndarray:
    import soundfile as sf

    data, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == RATE, (path, rate)
    return data.T  # (channels, frames)
