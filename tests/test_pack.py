"""Packs made for real with the shipped model: files read back, the manifest's checksums, bit-identical
reruns, batch-free rendering, a kill -9 and a resume, a refused resume, and the kits parsed back."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from companion.engine.model_files import load_backend
from companion.output.wavfile import read_info
from companion.pack.render import Renderer, RenderSetup
from companion.pack.runner import make_pack
from companion.pack.spec import load_spec
from companion.pack.state import PackStateError
from models.generate import SamplingOptions, generate

ROOT = Path(__file__).resolve().parents[1]
SPEC = """\
[pack]
name = "mini"
seed = 11

[sampling]
steps = 3
seconds = 0.1

[categories.kick]
count = 3

[categories.closed_hat]
count = 2

[categories.open_hat]
count = 2
"""


def write_spec(folder: Path, text: str = SPEC) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.toml").write_text(text)
    return folder / "spec.toml"


def hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.wav")}


@pytest.fixture(scope="module")
def renderer(tmp_path_factory):
    spec = load_spec(write_spec(tmp_path_factory.mktemp("setup")))
    return Renderer(RenderSetup.of(spec))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, renderer):
    """The mini pack made once in this process: its folder and file hashes."""
    spec = load_spec(write_spec(tmp_path_factory.mktemp("reference")))
    summary = make_pack(spec, renderer=renderer, stream=None)
    assert summary.rendered == 7 and summary.kept == 0
    return spec.out, hashes(spec.out)


def test_a_pack_holds_every_sound_with_its_recipe_and_checksum(reference):
    out, files = reference
    assert sorted(files) == ["closed_hat/mini_closed_hat_001.wav", "closed_hat/mini_closed_hat_002.wav",
                             "kick/mini_kick_001.wav", "kick/mini_kick_002.wav", "kick/mini_kick_003.wav",
                             "open_hat/mini_open_hat_001.wav", "open_hat/mini_open_hat_002.wav"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["sounds"] == 7
    assert manifest["render"]["threads"] == 1 and manifest["render"]["backend"] == "onnxruntime"
    assert manifest["render"]["runtime"].startswith("onnxruntime ")
    for entry in manifest["files"]:
        path = out / entry["path"]
        assert entry["sha256"] == files[entry["path"]] and entry["bytes"] == path.stat().st_size
        audio, rate = sf.read(path, always_2d=True)
        assert rate == 44100 and audio.shape == (4410, 2) and np.abs(audio).max() > 0.01
        recipe = entry["recipe"]
        assert recipe["seed"] == entry["seed"] and recipe["steps"] == 3 and recipe["category"] == entry["category"]
        # the WAV carries the same recipe, and nothing that changes from run to run (no time stamp)
        info = read_info(path)
        assert json.loads(info["ICMT"]) == recipe
        assert "ICRD" not in info


def test_a_pack_sound_is_its_seed_rendered_alone(reference):
    out, _ = reference
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["files"][1]
    backend = load_backend(None, threads=1)
    alone = generate(backend, [entry["seed"]], category="kick", length=4410, options=SamplingOptions(steps=3))[0]
    audio, _ = sf.read(out / entry["path"], always_2d=True, dtype="float32")
    # PCM 24 holds the rendered samples to within one step of 2^-23
    assert np.abs(audio.T - alone).max() <= 1.5 / 2**23


def test_the_same_spec_gives_the_same_bytes_and_other_sounds_change_nothing(tmp_path, reference, renderer):
    _, files = reference
    again = load_spec(write_spec(tmp_path / "again"))
    make_pack(again, renderer=renderer, stream=None)
    assert hashes(again.out) == files
    # the kicks alone, and with a snare category added before them: the kicks do not move by a bit
    other = SPEC.replace("[categories.kick]", "[categories.snare]\ncount = 2\n\n[categories.kick]")
    other = other.replace("[categories.closed_hat]\ncount = 2\n", "").replace("[categories.open_hat]\ncount = 2\n", "")
    spec = load_spec(write_spec(tmp_path / "other", other))
    make_pack(spec, renderer=renderer, stream=None)
    kicks = {k: v for k, v in files.items() if k.startswith("kick/")}
    assert {k: v for k, v in hashes(spec.out).items() if k.startswith("kick/")} == kicks


def test_a_finished_pack_says_so_and_does_nothing(tmp_path, reference, renderer):
    out, files = reference
    spec = load_spec(write_spec(out.parent))  # the reference pack's own spec and folder
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    summary = make_pack(spec, renderer=renderer, stream=None)
    assert summary.complete_before and summary.rendered == 0
    assert "already complete" in summary.lines()[0] and "nothing to do" in summary.lines()[0]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == before
    proc = subprocess.run([sys.executable, "-m", "companion", "pack", str(out.parent / "spec.toml")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "already complete: 7 sounds" in proc.stdout, proc.stderr
    assert hashes(out) == files


def test_a_lost_file_is_rendered_again_to_the_same_bytes(tmp_path, reference, renderer):
    _, files = reference
    spec = load_spec(write_spec(tmp_path))
    make_pack(spec, renderer=renderer, stream=None)
    (spec.out / "kick/mini_kick_002.wav").unlink()
    summary = make_pack(spec, renderer=renderer, stream=None)
    assert summary.rendered == 1 and summary.kept == 6
    assert hashes(spec.out) == files


def test_kill_9_mid_pack_leaves_no_partial_wav_and_the_resume_finishes_it_identically(tmp_path, reference):
    _, files = reference
    # enough work that the kill lands mid-run: more steps for every sound (other files than the reference)
    slow = SPEC.replace("steps = 3", "steps = 40")
    spec_path = write_spec(tmp_path, slow)
    out = tmp_path / "mini"
    proc = subprocess.Popen([sys.executable, "-m", "companion", "pack", str(spec_path), "-q"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.rglob("*.wav"))) < 2:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    done = sorted(out.rglob("*.wav"))
    assert 2 <= len(done) < 7, "the kill should land mid-pack"
    for path in done:  # every WAV under its final name is whole
        audio, _ = sf.read(path, always_2d=True)
        assert audio.shape == (4410, 2)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "in progress"
    resumed = subprocess.run([sys.executable, "-m", "companion", "pack", str(spec_path), "-q"], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{7 - len(done)} sound(s) rendered" in resumed.stdout and f"{len(done)} already there" in resumed.stdout
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]
    # the same files as a run that was never interrupted
    whole = load_spec(write_spec(tmp_path / "whole", slow))
    make_pack(whole, stream=None)
    assert hashes(out) == hashes(whole.out)
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_a_stale_partial_is_removed_at_the_next_run(tmp_path, renderer):
    spec = load_spec(write_spec(tmp_path))
    (spec.out / "kick").mkdir(parents=True)
    stale = spec.out / "kick" / ".mini_kick_001.wav.999999999.partial"
    stale.write_bytes(b"RIFF half a file")
    foreign = spec.out / "kick" / "notes.txt.partial"
    foreign.write_text("not ours")
    summary = make_pack(spec, renderer=renderer, stream=None)
    assert summary.removed_partials == 1 and not stale.exists() and foreign.exists()


def test_resuming_with_another_recipe_is_refused_and_touches_nothing(tmp_path, renderer):
    spec = load_spec(write_spec(tmp_path))
    make_pack(spec, renderer=renderer, stream=None)
    before = hashes(spec.out)
    changed = load_spec(write_spec(tmp_path, SPEC.replace("steps = 3", "steps = 4")))
    with pytest.raises(PackStateError, match=r"mini_kick_001.wav already exists but was not made from this spec"):
        make_pack(changed, renderer=renderer, stream=None)
    threads = load_spec(write_spec(tmp_path, SPEC.replace("seed = 11", "seed = 11\nthreads = 2")))
    with pytest.raises(PackStateError, match=r"threads=1.*threads=2"):
        make_pack(threads, stream=None)
    manifest = json.loads((spec.out / "manifest.json").read_text())
    manifest["render"]["runtime"] = "onnxruntime 0.1"  # as if made with another runtime version
    (spec.out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackStateError, match=r"runtime='onnxruntime 0.1'.*runtime='onnxruntime 1"):
        make_pack(spec, renderer=renderer, stream=None)
    assert hashes(spec.out) == before


# --- kits ------------------------------------------------------------------------------------------


def play_sfz(path: Path, note: int, velocity: int, hit: int) -> np.ndarray:
    """What a sampler plays for the ``hit``-th (1-based) note-on of ``note`` at ``velocity``."""
    text = path.read_text()
    groups = re.split(r"(?=<group>)", re.sub(r"//[^\n]*", "", text))
    found = []
    for group in groups[1:]:
        opcodes = dict(re.findall(r"(\w+)=(\S+)", group.split("<region>")[0]))
        for region in group.split("<region>")[1:]:
            r = {**opcodes, **dict(re.findall(r"(\w+)=([^\s]+)", region))}
            if int(r["key"]) == note and int(r["lovel"]) <= velocity <= int(r["hivel"]):
                if (hit - 1) % int(r["seq_length"]) + 1 == int(r["seq_position"]):
                    found.append(r)
    assert len(found) == 1, found
    audio, _ = sf.read(path.parent / found[0]["sample"], always_2d=True, dtype="float32")
    return audio


LAYERED = SPEC.replace("[categories.kick]\ncount = 3", "[categories.kick]\ncount = 4\nvelocity_layers = 2")


def test_the_sfz_kit_passes_a_linter_and_maps_every_sound(tmp_path, renderer):
    from sfzlint.parser import SFZValidatorConfig, validate

    spec = load_spec(write_spec(tmp_path, LAYERED))
    summary = make_pack(spec, kit="sfz", renderer=renderer, stream=None)
    kit = summary.kit
    assert kit == spec.out / "mini.sfz"
    problems = []
    validate(kit, err_cb=lambda sev, msg, token, file_path: problems.append((sev, msg, token.line)),
             config=SFZValidatorConfig(file_path=kit, check_includes=False, rel_path=kit.parent))
    assert problems == []  # every opcode known to the SFZ spec, every sample file found
    text = kit.read_text()
    # GM notes from the pad map; the kick's two velocity layers of two round robins each
    assert "key=36 lovel=1 hivel=63 seq_length=2" in text and "key=36 lovel=64 hivel=127 seq_length=2" in text
    assert "key=42 lovel=1 hivel=127 seq_length=2\ngroup=33" in text  # closed hat cuts...
    assert "key=46 lovel=1 hivel=127 seq_length=2\ngroup=1 off_by=33" in text  # ...the open hat
    manifest = json.loads((spec.out / "manifest.json").read_text())
    by_name = {e["path"]: e for e in manifest["files"]}
    # a soft and a loud kick, two hits each: the round robin walks the layer's variations
    for velocity, layer in ((40, 1), (120, 2)):
        for hit in (1, 2, 3):
            played = play_sfz(kit, 36, velocity, hit)
            variation = (hit - 1) % 2 + 1
            name = [n for n, e in by_name.items() if e["category"] == "kick" and e["layer"] == layer
                    and e["variation"] == variation][0]
            expected, _ = sf.read(spec.out / name, always_2d=True, dtype="float32")
            assert np.array_equal(played, expected)
    assert np.array_equal(play_sfz(kit, 46, 100, 2),
                          sf.read(spec.out / "open_hat/mini_open_hat_002.wav", always_2d=True, dtype="float32")[0])


def best_match(played: np.ndarray, wavs: dict[str, np.ndarray]) -> list[tuple[float, str]]:
    """Pack files by how well ``played`` matches them: the best normalised correlation over a lag of 0..2
    samples (sfizz plays a sample a fraction of a sample late and ~11.6 dB down, so not bit for bit)."""
    scores = []
    for name, wav in wavs.items():
        n = min(8192, wav.shape[1]) - 2
        w = wav[:, :n].ravel()
        best = max(float(played[:, lag:lag + n].ravel() @ w) / np.sqrt(float(played[:, lag:lag + n].ravel()
                   @ played[:, lag:lag + n].ravel()) * float(w @ w)) for lag in (0, 1, 2))
        scores.append((best, name))
    return sorted(scores, reverse=True)


def test_sfizz_plays_the_sfz_kit_note_by_note_as_mapped(tmp_path, renderer):
    try:
        import pysfizz
    except ImportError:
        pytest.fail("the SFZ player test needs sfizz: pip install 'pysfizz==0.1.3'")
    spec = load_spec(write_spec(tmp_path, LAYERED.replace("seconds = 0.1", "seconds = 0.3")))
    kit = make_pack(spec, kit="sfz", renderer=renderer, stream=None).kit
    manifest = json.loads((spec.out / "manifest.json").read_text())
    wavs = {e["path"]: sf.read(spec.out / e["path"], always_2d=True, dtype="float32")[0].T for e in manifest["files"]}
    entry = {(e["category"], e["layer"], e["variation"]): e["path"] for e in manifest["files"]}
    synth = pysfizz.Synth(sample_rate=44100, block_size=256)
    assert synth.load_sfz_file(kit)
    assert synth.playable_keys == [36, 42, 46]
    regions = [synth._synth.get_region_data(i) for note in (36, 42, 46) for i in synth._synth.get_regions_for_note(note)]
    assert sorted(r["sample_id"] for r in regions) == sorted(wavs)  # sfizz's own parse: every file, once
    assert all(r["loop_mode"] == "one_shot" for r in regions)
    # hit after hit, the played sound is the file the kit maps there (round robin, then the velocity layer);
    # the round-robin counter counts the note-ons of a key, whatever their velocity
    hits = {36: 0, 42: 0, 46: 0}
    for note, category, velocity, layer, variations in ((36, "kick", 120, 2, 2), (36, "kick", 30, 1, 2),
                                                       (42, "closed_hat", 100, 1, 2), (46, "open_hat", 100, 1, 2)):
        for hit in range(3):
            played = synth.render_note(note, velocity, 1.0, 0.4)
            scores = best_match(played, wavs)
            expected = entry[(category, layer, hits[note] % variations + 1)]
            hits[note] += 1
            assert scores[0][1] == expected, (note, velocity, hit, scores[:3])
            assert scores[0][0] > 0.5 and scores[0][0] - scores[1][0] > 0.3, scores[:3]  # clearly that file
    # the choke: a closed hat silences a ringing open hat
    raw = synth._synth
    raw.note_on(0, 46, 100)
    for _ in range(12):  # 70 ms of a 300 ms open hat: still ringing
        raw.render_block()
    assert raw.get_num_active_voices() == 1
    raw.note_on(0, 42, 100)
    for _ in range(12):  # sfizz's fast off takes 15-30 ms
        raw.render_block()
    assert raw.get_num_active_voices() == 1  # the closed hat alone: the open hat was cut


def test_the_decent_sampler_preset_maps_the_same_kit(tmp_path, renderer):
    spec = load_spec(write_spec(tmp_path, LAYERED))
    kit = make_pack(spec, kit="dspreset", renderer=renderer, stream=None).kit
    root = ET.parse(kit).getroot()
    assert root.tag == "DecentSampler"
    groups = root.find("groups").findall("group")
    samples = [(g, s) for g in groups for s in g.findall("sample")]
    assert sorted(s.get("path") for _, s in samples) == sorted(p.as_posix() for p in
                                                               (p.relative_to(spec.out) for p in spec.out.rglob("*.wav")))
    for group, sample in samples:
        assert (spec.out / sample.get("path")).is_file()
        assert sample.get("rootNote") == sample.get("loNote") == sample.get("hiNote")
        assert group.get("seqMode") == "round_robin" and 1 <= int(sample.get("seqPosition")) <= int(group.get("seqLength"))
    kicks = {(s.get("loVel"), s.get("hiVel"), s.get("seqPosition")): s.get("path") for g, s in samples
             if s.get("rootNote") == "36"}
    assert set(kicks) == {("1", "63", "1"), ("1", "63", "2"), ("64", "127", "1"), ("64", "127", "2")}
    hats = {g.get("name"): g for g in groups}
    assert hats["open_hat 1"].get("silencedByTags") == "cut1" and hats["closed_hat 1"].get("tags") == "cut1"
    # a second run on the finished pack writes the other kit too, rendering nothing
    again = make_pack(spec, kit="sfz", renderer=renderer, stream=None)
    assert again.complete_before and again.kit.is_file()


def test_the_small_example_pack_renders_with_its_kit_from_the_command_line(tmp_path):
    spec = tmp_path / "small-pack.toml"
    spec.write_text((ROOT / "examples" / "small-pack.toml").read_text())
    proc = subprocess.run([sys.executable, "-m", "companion", "pack", str(spec), "--kit", "sfz"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "8 sound(s) rendered" in proc.stdout and "kit:" in proc.stdout
    assert "sound/s" in proc.stderr and "8/8" in proc.stderr  # the progress bar: done, rate, time left
    out = tmp_path / "small-pack"
    assert len(list(out.rglob("*.wav"))) == 8 and (out / "small-pack.sfz").is_file()
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
