"""The voice mixer the audio callback runs: polyphony, velocity gain, choke groups, fades, a soft limiter.

One producer thread (the pad rack) calls :meth:`Mixer.play` and friends; the audio thread calls
:meth:`Mixer.render`. They share no lock. The producer writes a command into a preallocated ring
and then publishes it by advancing ``_write``; the callback reads commands up to ``_write`` and
advances ``_read``. Sample buffers are registered in a fixed bank of slots that only the producer
writes, and the producer frees a slot only when no pending command and no sounding voice uses it,
so the callback never drops the last reference to a buffer (never frees memory), never allocates a
NumPy array (it works in preallocated scratch arrays), never waits and never does I/O. Python still
makes small int/float objects in the callback; that is the GIL's business, not a buffer allocation.

Buffers are float32 ``[frames, channels]`` at the device rate with the device's channel count;
resampling happens before they get here (:mod:`companion.live.padrack`), never in the callback.
"""

from __future__ import annotations

import threading

import numpy as np

from models.errors import DDError

PLAY, CHOKE, STOP_ALL, MASTER = 1, 2, 3, 4
MAX_GROUPS = 31  # choke groups 1..31 fit one int bit mask
COLLECT_AT = 48  # registered buffers before the producer looks for unused ones


class MixerError(DDError, ValueError):
    """A buffer, gain or group the mixer cannot take."""

    code = "bad_config"


class Mixer:
    """``polyphony`` voices sound at once (a new one steals the oldest, with a ``fade_ms`` fade-out);
    ``fade_slots`` more slots hold voices while they fade. ``max_block`` frames are mixed per pass."""

    def __init__(self, channels: int = 2, rate: int = 48000, *, polyphony: int = 32, fade_ms: float = 5.0,
                 master_gain: float = 1.0, limit_threshold: float = 0.8, ring_size: int = 256,
                 bank_size: int = 512, max_block: int = 4096) -> None:
        for name, value, low in (("channels", channels, 1), ("rate", rate, 1000), ("polyphony", polyphony, 1),
                                 ("ring_size", ring_size, 8), ("bank_size", bank_size, 8),
                                 ("max_block", max_block, 16)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise MixerError(f"{name} must be an integer >= {low}, got {value!r}")
        if not 0.0 < limit_threshold < 1.0:
            raise MixerError(f"limit_threshold must be in (0, 1), got {limit_threshold!r}")
        self.channels, self.rate, self.polyphony = channels, rate, polyphony
        self.fade_frames = max(1, int(rate * fade_ms / 1000.0))
        self.threshold = float(limit_threshold)
        self.master_gain = check_gain(master_gain, "master gain")
        self.underruns = 0  # counted by the audio output's callback
        self.dropped = 0  # commands refused because the ring was full
        self.limited_blocks = 0  # blocks the soft limiter touched
        self.rendered_frames = 0
        # command ring: written by the producer only, read by the callback only
        self._ring = ring_size
        self._c_kind = [0] * ring_size
        self._c_handle = [0] * ring_size
        self._c_gain = [0.0] * ring_size
        self._c_group = [0] * ring_size
        self._c_cuts = [0] * ring_size
        self._c_pad = [0] * ring_size
        self._write = 0
        self._read = 0
        self._producer = threading.Lock()  # producers only; the callback never touches it
        # sample bank: slots written by the producer only
        self._bank: list[np.ndarray | None] = [None] * bank_size
        self._bank_ids: dict[int, int] = {}  # id(buffer) -> slot
        # voices: written by the callback only (the producer reads them to free bank slots)
        slots = polyphony + max(4, polyphony // 4)
        self._slots = slots
        self._v_on = [False] * slots
        self._v_handle = [0] * slots
        self._v_pos = [0] * slots
        self._v_gain = [0.0] * slots
        self._v_group = [0] * slots
        self._v_pad = [0] * slots
        self._v_fade = [0] * slots  # frames of fade-out left; 0 = not fading
        self._v_age = [0] * slots
        self._age = 0
        # scratch for the callback
        self._mix = np.zeros((max_block, channels), np.float32)
        self._tmp = np.zeros((max_block, channels), np.float32)
        self._tmp2 = np.zeros((max_block, channels), np.float32)
        self._env = np.zeros((max_block, 1), np.float32)
        self._idx = np.arange(max_block, dtype=np.float32).reshape(-1, 1)
        self._max_block = max_block

    # ------------------------------------------------------------------ producer side

    def play(self, buffer: np.ndarray, gain: float = 1.0, *, group: int = 0, cuts: int = 0, pad: int = 0) -> bool:
        """Start ``buffer`` at ``gain``; it belongs to choke ``group`` (0 = none) and first fades out
        every voice whose group bit is set in ``cuts``. False when the command ring was full."""
        gain = check_voice(buffer, self.channels, gain, group)
        with self._producer:
            handle = self._register(buffer)
            if handle < 0:
                self.dropped += 1
                return False
            return self._push(PLAY, handle, gain, group, int(cuts), pad)

    def load(self, buffer: np.ndarray) -> bool:
        """Get ``buffer`` ready to play (here: only checked; a :class:`~companion.live.audio_proc.MixerProxy`
        shares it with the audio process ahead of its first hit)."""
        check_voice(buffer, self.channels, 1.0, 0)
        return True

    def choke(self, cuts: int) -> bool:
        """Fade out every voice whose choke group bit is set in ``cuts``."""
        with self._producer:
            return self._push(CHOKE, 0, 0.0, 0, int(cuts), 0)

    def stop_all(self) -> bool:
        """Fade out every voice (panic)."""
        with self._producer:
            return self._push(STOP_ALL, 0, 0.0, 0, 0, 0)

    def set_master_gain(self, gain: float) -> bool:
        gain = check_gain(gain, "master gain")
        with self._producer:
            return self._push(MASTER, 0, gain, 0, 0, 0)

    def active_voices(self) -> int:
        return sum(self._v_on)

    def stats(self) -> dict[str, int]:
        return {"voices": self.active_voices(), "underruns": self.underruns, "dropped": self.dropped,
                "limited_blocks": self.limited_blocks, "rendered_frames": self.rendered_frames}

    def _push(self, kind: int, handle: int, gain: float, group: int, cuts: int, pad: int) -> bool:
        w = self._write
        if w - self._read >= self._ring:
            self.dropped += 1
            return False
        i = w % self._ring
        self._c_kind[i], self._c_handle[i], self._c_gain[i] = kind, handle, gain
        self._c_group[i], self._c_cuts[i], self._c_pad[i] = group, cuts, pad
        self._write = w + 1  # publish last: the callback only reads slots below _write
        return True

    def _register(self, buffer: np.ndarray) -> int:
        slot = self._bank_ids.get(id(buffer))
        if slot is not None and self._bank[slot] is buffer:
            return slot
        if len(self._bank_ids) >= COLLECT_AT:  # keep the bank small: it pins buffers in memory
            self._collect()
        slot = next((i for i, b in enumerate(self._bank) if b is None), -1)
        if slot < 0:
            return -1
        self._bank[slot] = buffer
        self._bank_ids[id(buffer)] = slot
        return slot

    def _collect(self) -> None:
        """Free bank slots no pending command and no voice uses (reads _read before the voices: a
        command consumed after that read is still counted as pending, see the module docstring)."""
        read, write = self._read, self._write
        used = {self._c_handle[i % self._ring] for i in range(read, write) if self._c_kind[i % self._ring] == PLAY}
        used.update(self._v_handle[k] for k in range(self._slots) if self._v_on[k])
        for slot, buffer in enumerate(self._bank):
            if buffer is not None and slot not in used:
                self._bank[slot] = None
                self._bank_ids.pop(id(buffer), None)

    # ------------------------------------------------------------------ audio thread

    def render(self, out: np.ndarray) -> None:
        """Fill ``out`` (float32 ``[frames, channels]``) with the mix. Called by the audio callback."""
        frames = out.shape[0]
        done = 0
        while done < frames:
            n = min(self._max_block, frames - done)
            self._render_block(out[done:done + n], n)
            done += n
        self.rendered_frames += frames

    def _render_block(self, out: np.ndarray, n: int) -> None:
        self._apply_commands()
        mix, tmp = self._mix[:n], self._tmp[:n]
        mix.fill(0.0)
        for k in range(self._slots):
            if self._v_on[k]:
                self._mix_voice(k, mix, tmp, n)
        if self.master_gain != 1.0:
            np.multiply(mix, self.master_gain, out=mix)
        self._limit(mix, n)
        out[:] = mix

    def _apply_commands(self) -> None:
        read, write = self._read, self._write
        while read < write:
            i = read % self._ring
            kind = self._c_kind[i]
            if kind == PLAY:
                if self._c_cuts[i]:
                    self._fade_groups(self._c_cuts[i])
                self._start_voice(self._c_handle[i], self._c_gain[i], self._c_group[i], self._c_pad[i])
            elif kind == CHOKE:
                self._fade_groups(self._c_cuts[i])
            elif kind == STOP_ALL:
                self._fade_groups(-1)
            elif kind == MASTER:
                self.master_gain = self._c_gain[i]
            read += 1
            self._read = read  # after the voice is set: see _collect

    def _fade_groups(self, cuts: int) -> None:
        for k in range(self._slots):
            if self._v_on[k] and not self._v_fade[k] and (cuts == -1 or (cuts >> self._v_group[k]) & 1):
                self._v_fade[k] = self.fade_frames

    def _start_voice(self, handle: int, gain: float, group: int, pad: int) -> None:
        sounding = oldest = -1
        count = 0
        free = -1
        for k in range(self._slots):
            if not self._v_on[k]:
                if free < 0:
                    free = k
            elif not self._v_fade[k]:
                count += 1
                if oldest < 0 or self._v_age[k] < self._v_age[oldest]:
                    oldest = k
        if count >= self.polyphony and oldest >= 0:  # steal the oldest, with a fade
            self._v_fade[oldest] = self.fade_frames
        if free < 0:  # every slot busy with fading voices: cut the one closest to silence
            for k in range(self._slots):
                if sounding < 0 or self._v_fade[k] < self._v_fade[sounding]:
                    sounding = k
            free = sounding
        self._age += 1
        self._v_handle[free], self._v_pos[free], self._v_gain[free] = handle, 0, gain
        self._v_group[free], self._v_pad[free], self._v_fade[free] = group, pad, 0
        self._v_age[free] = self._age
        self._v_on[free] = True

    def _mix_voice(self, k: int, mix: np.ndarray, tmp: np.ndarray, n: int) -> None:
        buffer = self._bank[self._v_handle[k]]
        pos = self._v_pos[k]
        m = min(n, buffer.shape[0] - pos) if buffer is not None else 0
        fade = self._v_fade[k]
        if fade:
            m = min(m, fade)
        if m <= 0:
            self._v_on[k] = False
            return
        part = tmp[:m]
        if fade:  # linear ramp from fade/fade_frames down to 0
            env = self._env[:m]
            np.subtract(fade, self._idx[:m], out=env)
            np.multiply(env, self._v_gain[k] / self.fade_frames, out=env)
            np.multiply(buffer[pos:pos + m], env, out=part)
            self._v_fade[k] = fade - m
        else:
            np.multiply(buffer[pos:pos + m], self._v_gain[k], out=part)
        np.add(mix[:m], part, out=mix[:m])
        self._v_pos[k] = pos + m
        if pos + m >= buffer.shape[0] or (fade and fade - m <= 0):
            self._v_on[k] = False

    def _limit(self, mix: np.ndarray, n: int) -> None:
        """Soft knee above the threshold: t + (1-t)·tanh((|x|-t)/(1-t)), so |y| <= 1 always."""
        a, s = self._tmp[:n], self._tmp2[:n]
        np.abs(mix, out=a)
        if a.max() <= self.threshold:
            return
        self.limited_blocks += 1
        t = self.threshold
        np.subtract(a, t, out=a)
        np.maximum(a, 0.0, out=a)
        np.multiply(a, 1.0 / (1.0 - t), out=s)
        np.tanh(s, out=s)
        np.multiply(s, 1.0 - t, out=s)
        np.subtract(a, s, out=a)  # how much each sample comes down
        np.copysign(a, mix, out=a)
        np.subtract(mix, a, out=mix)


def check_voice(buffer: np.ndarray, channels: int, gain: float, group: int) -> float:
    """Refuse what :meth:`Mixer.play` cannot take (naming what is allowed); the gain as a float."""
    if not isinstance(buffer, np.ndarray) or buffer.dtype != np.float32 or buffer.ndim != 2 \
            or buffer.shape[1] != channels or not buffer.flags.c_contiguous:
        shape = getattr(buffer, "shape", None)
        raise MixerError(f"a voice must be a C-contiguous float32 [frames, {channels}] array, "
                         f"got {type(buffer).__name__} {shape} {getattr(buffer, 'dtype', '')}")
    if isinstance(group, bool) or not isinstance(group, int) or not 0 <= group <= MAX_GROUPS:
        raise MixerError(f"choke group must be an integer in 0..{MAX_GROUPS}, got {group!r}")
    return check_gain(gain, "voice gain")


def check_gain(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 4.0:
        raise MixerError(f"{what} must be a number in 0..4, got {value!r}")
    return float(value)


def group_mask(groups: tuple[int, ...] | list[int]) -> int:
    """The ``cuts`` bit mask for choke ``groups`` (each in 1..31)."""
    mask = 0
    for g in groups:
        if isinstance(g, bool) or not isinstance(g, int) or not 1 <= g <= MAX_GROUPS:
            raise MixerError(f"choke groups must be integers in 1..{MAX_GROUPS}, got {g!r}")
        mask |= 1 << g
    return mask
