"""The sample-pack output folder: real files on disk, read back with soundfile.

Failure paths: tests run as root in CI, where chmod does not stop writes, so "read-only" is shown
three ways: a real chmod test (skipped as root), a folder path under a *file* (fails for root too),
and a monkeypatched open that raises EACCES. Disk full is a monkeypatched write raising ENOSPC.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import companion.output.folder as folder_mod
from companion.output import wavfile
from companion.output.folder import (
    DiskFullError,
    FolderUnwritableError,
    OutputError,
    OutputSettingError,
    SampleFolder,
    category_slug,
    default_output_folder,
)
from companion.output.wavfile import WavError

REPO = Path(__file__).resolve().parents[1]
RECIPE = {
    "model": "kicks-v2",
    "model_hash": "ab12",
    "sampler": "v-ddim",
    "steps": 50,
    "strength": 1.0,
    "sources": [],
}


def _noise(frames: int = 4800, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((channels, frames)) * 0.3).astype(np.float32)


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _write(folder: SampleFolder, seed: int = 123456, category: str | None = "kick", **kw) -> Path:
    kw.setdefault("recipe", RECIPE)
    return folder.write(kw.pop("audio", _noise()), kw.pop("rate", 48000), category=category, seed=seed, **kw)


# -- files, formats and metadata ---------------------------------------------------------------


def test_pcm24_sample_lands_in_its_category_folder(tmp_path):
    audio = _noise()
    path = SampleFolder(tmp_path).write(audio, 48000, category="Kick", seed=123456, recipe=RECIPE)
    assert path == tmp_path / "Kick" / "dd_kick_123456_0001.wav"
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (48000, 2, 4800, "PCM_24")
    back, _ = sf.read(path, dtype="float32")
    assert np.abs(audio).max() > 1  # some overs, which PCM clips
    np.testing.assert_allclose(back, np.clip(audio.T, -1, 1), atol=1.5 / 2**23)
    assert _tree(tmp_path) == [
        ".dd-companion-manifest.json",
        "Kick/dd_kick_123456_0001.json",
        "Kick/dd_kick_123456_0001.wav",
    ]


def test_float_output_is_bit_exact(tmp_path):
    audio = _noise(channels=1)
    audio[0, 0] = 1.5
    path = _write(SampleFolder(tmp_path, subtype="FLOAT"), audio=audio)
    back, _ = sf.read(path, dtype="float32", always_2d=True)
    assert sf.info(path).subtype == "FLOAT"
    np.testing.assert_array_equal(back.T, audio)


def test_resampling_44100_to_48000(tmp_path):
    audio = _noise(44100)
    path = _write(SampleFolder(tmp_path, rate=48000), audio=audio, rate=44100)
    info = sf.info(path)
    assert (info.samplerate, info.frames, info.subtype) == (48000, 48000, "PCM_24")
    side = json.loads(path.with_suffix(".json").read_text())
    assert (side["model_rate"], side["rate"], side["frames"], side["seconds"]) == (44100, 48000, 48000, 1.0)
    # a 1 kHz tone stays a 1 kHz tone after resampling
    t = np.arange(44100) / 44100
    tone = np.stack([np.sin(2 * np.pi * 1000 * t)] * 2).astype(np.float32) * 0.5
    back, _ = sf.read(_write(SampleFolder(tmp_path, rate=48000), audio=tone, rate=44100), dtype="float32")
    expect = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(48000) / 48000)
    np.testing.assert_allclose(back[1000:-1000, 0], expect[1000:-1000], atol=1e-3)


def test_sidecar_and_info_hold_the_recipe_and_file_facts(tmp_path):
    recipe = dict(RECIPE, sources=[tmp_path / "in.wav"], strength=np.float32(0.5))  # paths and numpy scalars
    path = SampleFolder(tmp_path, rate=44100).write(
        _noise(), 48000, category="Hi-Hat", seed=7, recipe=recipe, kind="variation"
    )
    assert path.relative_to(tmp_path).as_posix() == "Hi Hat/dd_hi_hat_var_7_0001.wav"
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["recipe"] == dict(RECIPE, sources=[str(tmp_path / "in.wav")], strength=0.5)
    assert side["file"] == path.name
    assert (side["category"], side["kind"], side["seed"], side["frame"]) == ("hi_hat", "variation", 7, None)
    assert (side["rate"], side["model_rate"], side["subtype"], side["channels"]) == (
        44100,
        48000,
        "PCM_24",
        2,
    )
    assert side["frames"] == sf.info(path).frames == 4410
    assert side["app_version"] == folder_mod.app_version()
    assert datetime.fromisoformat(side["created"]).tzinfo is not None
    assert wavfile.read_recipe(path) == side  # the WAV alone is enough to regenerate
    info = wavfile.read_info(path)
    assert info["INAM"] == "dd_hi_hat_var_7_0001"
    assert info["IGNR"] == "Hi Hat"
    assert info["ISFT"] == f"dd-companion {side['app_version']}"
    assert info["ICRD"] == side["created"][:10]
    assert wavfile.read_acid(path) == wavfile.AcidInfo(one_shot=True)


def test_loops_are_tagged_with_tempo_and_beats(tmp_path):
    path = _write(SampleFolder(tmp_path), audio=_noise(96000), loop=True, tempo=120.0)
    assert wavfile.read_acid(path) == wavfile.AcidInfo(one_shot=False, beats=4, tempo=120.0)
    assert json.loads(path.with_suffix(".json").read_text())["beats"] == 4


def test_names_for_each_kind_and_unconditional_models(tmp_path):
    out = SampleFolder(tmp_path)
    assert _write(out, seed=5).name == "dd_kick_5_0001.wav"
    assert _write(out, seed=5, kind="variation").name == "dd_kick_var_5_0002.wav"
    series = out.reserve_series("kick")
    frames = [_write(out, seed=9, kind="morph", frame=f, series=series).name for f in range(3)]
    assert frames == [
        "dd_kick_morph_0003_f00.wav",
        "dd_kick_morph_0003_f01.wav",
        "dd_kick_morph_0003_f02.wav",
    ]
    assert _write(out, seed=5).name == "dd_kick_5_0004.wav"
    assert (
        _write(out, seed=11, category=None).relative_to(tmp_path).as_posix() == "Sample/dd_sample_11_0001.wav"
    )
    assert category_slug("  Open HAT (808)! ") == "open_hat_808"
    assert category_slug("Café") == "cafe"


# -- never touch the user's files --------------------------------------------------------------


def test_counter_never_overwrites_or_reuses_names(tmp_path):
    kick = tmp_path / "Kick"
    kick.mkdir()
    (kick / "dd_kick_7_0001.wav").write_bytes(b"user file 1")
    (kick / "dd_kick_3_0005.wav").write_bytes(b"user file 5")
    (kick / "dd_kick_7_0006.json").write_text("user notes")  # a name taken by a sidecar only
    out = SampleFolder(tmp_path)
    assert _write(out, seed=7).name == "dd_kick_7_0007.wav"
    assert (kick / "dd_kick_7_0001.wav").read_bytes() == b"user file 1"
    assert (kick / "dd_kick_3_0005.wav").read_bytes() == b"user file 5"
    assert (kick / "dd_kick_7_0006.json").read_text() == "user notes"
    # a file appearing under the next name after the folder was scanned is skipped too
    (kick / "dd_kick_7_0008.wav").write_bytes(b"late user file")
    assert _write(out, seed=7).name == "dd_kick_7_0009.wav"
    assert (kick / "dd_kick_7_0008.wav").read_bytes() == b"late user file"
    # a new writer (restart) continues after names deleted by auto-fill, via the manifest
    small = SampleFolder(tmp_path, max_per_category=1)
    assert _write(small).name == "dd_kick_123456_0010.wav"
    assert not (kick / "dd_kick_7_0009.wav").exists()
    (kick / "dd_kick_123456_0010.wav").unlink()
    (kick / "dd_kick_123456_0010.json").unlink()
    SampleFolder._counters.clear()  # as after a restart: only the disk and the manifest remain
    assert _write(SampleFolder(tmp_path)).name == "dd_kick_123456_0011.wav"


def test_auto_fill_deletes_only_the_oldest_companion_files(tmp_path):
    kick = tmp_path / "Kick"
    kick.mkdir()
    user = {"dd_kick_1_0001.wav": b"looks like ours", "my kick.wav": b"mine", "notes.json": b"{}"}
    for name, data in user.items():
        (kick / name).write_bytes(data)
    out = SampleFolder(tmp_path, max_per_category=2)
    snare = _write(out, category="snare")
    written = [_write(out, seed=s) for s in range(10, 15)]
    assert out.companion_files("kick") == written[-2:]
    assert out.companion_files() == [snare, *written[-2:]]
    for gone in written[:-2]:
        assert not gone.exists() and not gone.with_suffix(".json").exists()
    for name, data in user.items():
        assert (kick / name).read_bytes() == data
    assert snare.exists()


def test_auto_fill_leaves_files_the_user_replaced_or_removed(tmp_path):
    out = SampleFolder(tmp_path, max_per_category=2)
    first, second = _write(out, seed=1), _write(out, seed=2)
    first.write_bytes(b"the user recorded over this one")
    second.unlink()
    third, fourth, fifth = _write(out, seed=3), _write(out, seed=4), _write(out, seed=5)
    assert first.read_bytes() == b"the user recorded over this one"
    assert out.companion_files("kick") == [fourth, fifth]
    assert not third.exists()


def test_bad_or_hostile_manifest_never_causes_deletions(tmp_path):
    victim = tmp_path / "precious.wav"
    victim.write_bytes(b"keep me")
    kick = tmp_path / "Kick"
    kick.mkdir()
    (kick / "dd_kick_1_0001.wav").write_bytes(b"user")
    entries = [
        {"path": "../precious.wav", "category": "kick", "seq": 1, "size": 7},
        {"path": str(victim), "category": "kick", "seq": 2, "size": 7},
        {"path": "Kick/dd_kick_1_0001.wav", "category": "kick", "seq": "3", "size": 4},
    ]
    manifest = tmp_path / folder_mod.MANIFEST_NAME
    manifest.write_text(json.dumps({"counters": {}, "files": entries}))
    out = SampleFolder(tmp_path, max_per_category=1)
    _write(out, seed=2)
    _write(out, seed=3)
    assert victim.read_bytes() == b"keep me"
    assert (kick / "dd_kick_1_0001.wav").read_bytes() == b"user"
    manifest.write_text("{not json")
    assert _write(out, seed=4).exists()
    assert (tmp_path / ".dd-companion-manifest.corrupt.json").read_text() == "{not json"
    assert [p.name for p in out.companion_files()] == ["dd_kick_4_0004.wav"]


# -- crashes and temporaries -------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_cleanup_removes_only_our_stale_temporaries(tmp_path):
    kick = tmp_path / "Kick"
    kick.mkdir()
    dead = _dead_pid()
    stale = [
        kick / f".dd_kick_1_0001.wav.{dead}.partial",
        kick / f".dd_kick_1_0001.json.{dead}.partial",
        tmp_path / f"..dd-companion-manifest.json.{dead}.partial",
    ]
    alive = kick / f".dd_kick_2_0002.wav.{os.getppid()}.partial"  # another running process
    foreign = [
        kick / f".other_app.wav.{dead}.partial",
        kick / "take.partial",
        kick / f"dd_kick_1_0001.wav.{dead}.partial",
    ]
    for path in [*stale, alive, *foreign]:
        path.write_bytes(b"RIFF")
    assert SampleFolder(tmp_path).cleanup_stale_temporaries() == 3
    assert not any(p.exists() for p in stale)
    assert alive.exists() and all(p.exists() for p in foreign)
    assert SampleFolder(tmp_path / "missing").cleanup_stale_temporaries() == 0


CRASH_CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import companion.output.folder as folder

    real, calls = folder._write_all, []
    def slow(f, data):
        real(f, data)
        calls.append(len(data))
        if len(calls) == 3:  # sidecar, WAV header, first data block: now hang mid-WAV
            f.flush()
            print("WRITING", flush=True)
            time.sleep(60)
    folder._write_all = slow
    audio = np.full((2, 65536 * 4), 0.25, np.float32)
    folder.SampleFolder(sys.argv[1]).write(audio, 48000, category="kick", seed=1, recipe={})
    """
)


def test_kill_9_mid_write_leaves_no_partial_wav_and_restart_cleans_up(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert line == b"WRITING\n", proc.stderr.read().decode()
        kick = tmp_path / "Kick"
        temp = kick / f".dd_kick_1_0001.wav.{proc.pid}.partial"
        assert 0 < temp.stat().st_size < 65536 * 4 * 6
        assert list(kick.glob("*.wav")) == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert list(kick.glob("*.wav")) == [] and list(kick.glob("*.json")) == []
    out = SampleFolder(tmp_path)
    assert out.cleanup_stale_temporaries() == 2  # the WAV and its sidecar
    assert _tree(tmp_path) == []
    assert _write(out, seed=1).name == "dd_kick_1_0001.wav"


def test_a_watcher_only_ever_sees_complete_files(tmp_path, monkeypatch):
    real = folder_mod._write_all

    def slow(f, data):
        real(f, data)
        time.sleep(0.005)

    monkeypatch.setattr(folder_mod, "_write_all", slow)
    seen: dict[str, int] = {}
    done = threading.Event()

    def watch():
        while not done.is_set():
            for path in (tmp_path / "Kick").glob("*.wav") if (tmp_path / "Kick").is_dir() else []:
                if path.name not in seen:
                    seen[path.name] = sf.info(path).frames
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        out = SampleFolder(tmp_path)
        for seed in range(3):
            _write(out, seed=seed, audio=_noise(65536 * 3))
    finally:
        done.set()
        watcher.join()
    assert len(seen) == 3 and set(seen.values()) == {65536 * 3}


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("hook", ["_write_all", "_fsync"])
def test_disk_full_raises_cleans_up_and_writer_stays_usable(tmp_path, monkeypatch, hook):
    out = SampleFolder(tmp_path)
    first = _write(out, seed=1)
    manifest_before = (tmp_path / folder_mod.MANIFEST_NAME).read_text()

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(folder_mod, hook, full)
    with pytest.raises(DiskFullError) as err:
        _write(out, seed=2)
    assert err.value.code == "disk_full" and isinstance(err.value, OutputError)
    assert str(tmp_path / "Kick") in str(err.value) and "free some space" in str(err.value)
    assert _tree(tmp_path) == [
        ".dd-companion-manifest.json",
        "Kick/dd_kick_1_0001.json",
        first.relative_to(tmp_path).as_posix(),
    ]
    assert (tmp_path / folder_mod.MANIFEST_NAME).read_text() == manifest_before
    monkeypatch.undo()
    assert _write(out, seed=2).name == "dd_kick_2_0003.wav"  # 0002 was burnt, never reused


def test_replace_failure_removes_the_already_placed_sidecar(tmp_path, monkeypatch):
    real, calls = os.replace, []

    def flaky(src, dst):
        calls.append(dst)
        if str(dst).endswith(".wav"):
            raise OSError(errno.EIO, "Input/output error")
        real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OutputError, match="Input/output error") as err:
        _write(SampleFolder(tmp_path))
    assert type(err.value) is OutputError and err.value.code == "output_error"
    assert [Path(c).suffix for c in calls] == [".json", ".wav"]
    assert _tree(tmp_path) == []


def test_folder_under_a_file_is_unwritable(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    for root in (blocker / "out", blocker):
        with pytest.raises(FolderUnwritableError) as err:
            _write(SampleFolder(root))
        assert err.value.code == "folder_unwritable"
        assert "afile" in str(err.value) and "is a file" in str(err.value)
    assert blocker.read_text() == "not a folder"
    assert _tree(tmp_path) == ["afile"]


def test_permission_denied_is_unwritable(tmp_path, monkeypatch):
    def denied(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    out = SampleFolder(tmp_path / "deep" / "out")
    monkeypatch.setattr(folder_mod, "_open_temp", denied)
    with pytest.raises(FolderUnwritableError, match="read-only or not permitted") as err:
        _write(out)
    assert str(tmp_path / "deep" / "out" / "Kick") in str(err.value)
    monkeypatch.undo()
    assert [p for p in _tree(tmp_path) if "partial" in p or p.endswith(".wav")] == []
    assert _write(out).exists()


def test_read_only_folder_with_chmod(tmp_path):
    """A real read-only folder. Root ignores file modes (CAP_DAC_OVERRIDE), so as root the write runs in a
    child process that has dropped to the unprivileged user 'nobody', for whom the mode binds."""
    ro = tmp_path / "ro"
    (ro / "Kick").mkdir(parents=True)
    (ro / "Kick").chmod(0o555)
    try:
        if not os.access(ro / "Kick", os.W_OK):
            with pytest.raises(FolderUnwritableError, match="read-only"):
                _write(SampleFolder(ro))
        else:
            assert hasattr(os, "fork") and os.geteuid() == 0, "chmod did not bind for a user who is not root"
            _write_as_nobody(tmp_path, ro)
        assert list((ro / "Kick").iterdir()) == []
    finally:
        (ro / "Kick").chmod(0o755)


def _write_as_nobody(tmp_path: Path, ro: Path) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    for folder in [tmp_path, *tmp_path.parents]:  # pytest's base temp folder is private to root: open the path
        folder.chmod(folder.stat().st_mode | 0o005)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges for good, try the write, report in one line
        os.close(read)
        outcome = "wrote"
        try:
            _write(SampleFolder(tmp_path / "warm-up"))  # imports what a write needs while the files are readable
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            _write(SampleFolder(ro))
        except FolderUnwritableError as exc:
            outcome = f"refused: {exc}"
        except BaseException as exc:  # noqa: BLE001 -- reported to the parent, which fails the test
            outcome = f"error: {type(exc).__name__}: {exc}"
        os.write(write, outcome.encode()[:4000])
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        outcome = pipe.read().decode()
    os.waitpid(pid, 0)
    assert outcome.startswith("refused:") and "read-only" in outcome, outcome


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"kind": "remix"}, "remix"),
        ({"seed": -1}, "-1"),
        ({"seed": 1.5}, "1.5"),
        ({"frame": 2}, "frame"),
        ({"kind": "morph"}, "morph frame"),
        ({"recipe": {"model": object()}}, "JSON"),
        ({"recipe": {"strength": float("nan")}}, "NaN"),
        ({"recipe": ["model"]}, "list"),
        ({"category": "!!!"}, "'!!!'"),
        ({"rate": 44}, "44"),
        ({"tempo": -3.0}, "-3.0"),
    ],
)
def test_bad_arguments_are_refused_before_touching_disk(tmp_path, kwargs, needle):
    with pytest.raises(OutputSettingError) as err:
        _write(SampleFolder(tmp_path), **kwargs)
    assert needle in str(err.value) and err.value.code == "bad_output_setting"
    assert _tree(tmp_path) == [] and list(tmp_path.iterdir()) == []


def test_bad_audio_and_bad_settings(tmp_path):
    with pytest.raises(WavError, match="transpose"):
        _write(SampleFolder(tmp_path), audio=np.zeros((4800, 2), np.float32))
    assert list(tmp_path.iterdir()) == []
    for kwargs in ({"subtype": "MP3"}, {"rate": 100}, {"max_per_category": 0}):
        with pytest.raises(OutputSettingError):
            SampleFolder(tmp_path, **kwargs)


# -- threads and defaults --------------------------------------------------------------------


def test_morph_series_never_overwrites_and_keeps_the_counter_ahead(tmp_path):
    out = SampleFolder(tmp_path)
    first = _write(out, kind="morph", frame=0, series=50)
    assert first.name == "dd_kick_morph_0050_f00.wav"
    data = first.read_bytes()
    again = _write(out, kind="morph", frame=0, series=50, audio=_noise(seed=9))
    assert again.name == "dd_kick_morph_0051_f00.wav"
    assert first.read_bytes() == data
    assert _write(out, seed=3).name == "dd_kick_3_0052.wav"


def test_concurrent_writers_get_unique_names(tmp_path):
    instances = [SampleFolder(tmp_path), SampleFolder(tmp_path)]  # e.g. engine worker and GUI
    audio = _noise(256)
    results: list[Path] = []
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for _ in range(5):
                out = instances[seed % 2]
                results.append(out.write(audio, 48000, category="kick", seed=seed, recipe={}))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    numbers = sorted(int(p.stem.rsplit("_", 1)[1]) for p in results)
    assert numbers == list(range(1, 21))
    assert sorted(instances[0].companion_files()) == sorted(results)


def test_default_output_folder(tmp_path, monkeypatch):
    music, docs = tmp_path / "Music", tmp_path / "Documents"
    monkeypatch.setattr(folder_mod.platformdirs, "user_music_dir", lambda: str(music))
    monkeypatch.setattr(folder_mod.platformdirs, "user_documents_dir", lambda: str(docs))
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path / "home"))
    assert default_output_folder() == tmp_path / "home" / "dd-companion"
    docs.mkdir()
    assert default_output_folder() == docs / "dd-companion"
    music.mkdir()
    assert default_output_folder() == music / "dd-companion"
    assert not (music / "dd-companion").exists()
