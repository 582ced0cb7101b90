"""Pack specs: the shipped examples, seeds derived from the spec, and every bad value refused with its line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from companion.engine.model_files import load_backend
from companion.pack.kit import kit_pads
from companion.pack.render import check_against_model
from companion.pack.spec import SpecError, derived_seed, load_spec

ROOT = Path(__file__).resolve().parents[1]
GOOD = """\
[pack]
name = "t"
seed = 7

[sampling]
steps = 4

[categories.kick]
count = 4
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def default_config():
    return load_backend(None).config


def test_the_examples_load_and_are_what_the_docs_promise(default_config):
    small = load_spec(ROOT / "examples" / "small-pack.toml")
    assert len(small.sounds) == 8 and len(small.categories) == 2
    assert small.out == (ROOT / "examples" / "small-pack").absolute()
    check_against_model(small, default_config)
    full = load_spec(ROOT / "examples" / "pack.toml")
    assert {c.name for c in full.categories} == set(default_config.categories)  # every category
    assert all(c.count >= 20 for c in full.categories)  # tens of sounds each
    assert any(c.velocity_layers > 1 for c in full.categories)
    check_against_model(full, default_config)
    kit_pads(full)


def test_seeds_come_from_the_spec_and_do_not_move_when_the_pack_grows(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    seeds = [s.seed for s in spec.sounds]
    assert seeds == [derived_seed(7, "kick", i) for i in (1, 2, 3, 4)]
    assert len(set(seeds)) == 4
    bigger = load_spec(write(tmp_path, GOOD.replace("count = 4", "count = 6") + "[categories.snare]\ncount = 2\n"))
    assert [s.seed for s in bigger.sounds][:4] == seeds
    explicit = load_spec(write(tmp_path, GOOD.replace("count = 4", "count = 3\nseed = 100")))
    assert [s.seed for s in explicit.sounds] == [100, 101, 102]
    listed = load_spec(write(tmp_path, GOOD.replace("count = 4", "count = 2\nseeds = [5, 9]")))
    assert [s.seed for s in listed.sounds] == [5, 9]


def test_names_layers_and_round_robin_positions(tmp_path):
    spec = load_spec(write(tmp_path, GOOD.replace("count = 4", "count = 6\nvelocity_layers = 2")))
    assert [s.name for s in spec.sounds][:2] == ["kick/t_kick_001.wav", "kick/t_kick_002.wav"]
    assert [(s.layer, s.variation) for s in spec.sounds] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert dict(spec.sounds[0].sampling) == {"steps": 4}


BAD = [
    # (what to change, the words the error must hold)
    (("count = 4", "count = 0"), ["line 9", "[categories.kick] count", "1..10000", "0"]),
    (("count = 4", "count = 4\nstepz = 3"), ["line 10", "stepz", "unknown key", "allowed keys"]),
    (("steps = 4", "steps = 4\nsampler = \"fast\""), ["line 7", "[sampling] sampler", "v-ddim", "'fast'"]),
    (("steps = 4", "steps = 0"), ["line 6", "[sampling] steps", "1..1000"]),
    (("steps = 4", "steps = 4\nseconds = 99"), ["line 7", "seconds", "0.01..30"]),
    (("steps = 4", "steps = 4\nguidance_interval = [0.5, 0.2]"), ["guidance_interval", "low < high"]),
    (("seed = 7", "seed = 7\nnaming = \"{category}/{nmae}.wav\""), ["line 4", "naming", "{nmae}", "{index}"]),
    (("seed = 7", "seed = 7\nnaming = \"../{category}_{index}.wav\""), ["naming", "inside the pack folder"]),
    (("seed = 7", "seed = 7\nnaming = \"{category}.wav\""), ["naming", "same file name", "kick.wav"]),
    (("seed = 7", "seed = 7\nnaming = \"{category}_{index}.flac\""), ["naming", "end in .wav"]),
    (("seed = 7", "seed = 7\nformat = \"mp3\""), ["line 4", "[pack] format", "pcm24", "'mp3'"]),
    (("seed = 7", "seed = 7\nthreads = 0"), ["[pack] threads", "1..64"]),
    (("seed = 7", "seed = -1"), ["line 3", "[pack] seed", "0..2147483647"]),
    (("name = \"t\"", "name = \"my pack!\""), ["line 2", "[pack] name", "letters"]),
    (("count = 4", "count = 3\nvelocity_layers = 2"), ["velocity_layers", "multiple of 2"]),
    (("count = 4", "count = 3\nseeds = [1, 2]"), ["line 10", "seeds", "exactly count = 3"]),
    (("count = 4", "count = 2\nseeds = [1, 1]"), ["seeds", "same seed twice"]),
    (("count = 4", "count = 2\nseeds = [1, 2]\nseed = 3"), ["either seed", "not both"]),
    (("count = 4", "count = 2\nnote = 300"), ["note", "0..127"]),
    (("[categories.kick]", "[categories.Kick]"), ["line 8", "[categories.Kick]", "lower-case"]),
    (("[categories.kick]\ncount = 4\n", "[categories.kick]\n"), ["[categories.kick]", "needs count"]),
    (("[sampling]", "[samplng]"), ["[samplng]", "unknown table"]),
    (("[pack]\nname = \"t\"\nseed = 7\n", ""), ["[pack] table is missing"]),
    (("steps = 4", "steps = = 4"), ["not valid TOML", "line 6"]),
]


@pytest.mark.parametrize("change,words", BAD, ids=[w[-1][:30] for _, w in BAD])
def test_a_bad_spec_is_refused_naming_the_line_field_and_what_is_allowed(tmp_path, change, words):
    old, new = change
    assert old in GOOD
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, GOOD.replace(old, new, 1)))
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_no_categories_and_a_missing_file_are_refused(tmp_path):
    with pytest.raises(SpecError, match="no categories"):
        load_spec(write(tmp_path, '[pack]\nname = "t"\n'))
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nothing.toml")


@pytest.mark.parametrize("change,words", [
    (("[categories.kick]", "[categories.cowbell]"), ["line 8", "[categories.cowbell]", "no category 'cowbell'",
                                                     "kick, snare"]),
    (("count = 4", "count = 4\nseconds = 0.011"), ["line 8", "seconds must be at least 0.017"]),
    (("count = 4", "count = 4\nsampler = \"v-iplms\"\neta = 0.5"), ["[categories.kick]", "takes no eta"]),
])
def test_what_only_the_model_knows_is_checked_before_any_work(tmp_path, default_config, change, words):
    spec = load_spec(write(tmp_path, GOOD.replace(*change)))
    with pytest.raises(SpecError) as err:
        check_against_model(spec, default_config)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_kit_note_clashes_are_spec_errors(tmp_path):
    spec = load_spec(write(tmp_path, GOOD + "[categories.snare]\ncount = 1\nnote = 36\n"))
    with pytest.raises(SpecError, match="note 36 is already the note of 'kick'"):
        kit_pads(spec)


def test_the_command_refuses_a_bad_spec_and_creates_nothing(tmp_path):
    spec = write(tmp_path, GOOD.replace("count = 4", "count = 4\nsampler = \"fast\""))
    proc = subprocess.run([sys.executable, "-m", "companion", "pack", str(spec)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "spec.toml line 10: [categories.kick] sampler: must be one of" in proc.stderr
    assert not (tmp_path / "t").exists()
    cowbell = write(tmp_path, GOOD.replace("kick", "cowbell"))
    proc = subprocess.run([sys.executable, "-m", "companion", "pack", str(cowbell), "-q"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no category 'cowbell'" in proc.stderr
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("extra,words", [
    (["--chunk", "0"], "--chunk must be in 1..1000, got 0"),
    (["--workers", "2"], "--workers and --chunk are for a Ray run"),
])
def test_the_command_refuses_bad_options(tmp_path, extra, words):
    spec = write(tmp_path, GOOD)
    proc = subprocess.run([sys.executable, "-m", "companion", "pack", str(spec), *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert not (tmp_path / "t").exists()


def test_pack_ray_without_ray_installed_names_the_install_line(tmp_path):
    spec = write(tmp_path, GOOD.replace("steps = 4", "steps = 1\nseconds = 0.05").replace("count = 4", "count = 1"))
    code = ("import sys; sys.modules['ray'] = None; from companion.cli.main import main; "
            f"sys.exit(main(['pack', {str(spec)!r}, '--ray', 'auto', '-q']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "pack --ray needs Ray: pip install 'dd-companion[ray]'" in proc.stderr
    assert not (tmp_path / "t").exists()


def test_every_sampling_key_passes_the_model_check(tmp_path, default_config):
    text = GOOD.replace("steps = 4", "steps = 4\nsampler = \"v-ddim\"\nschedule = \"crash\"\neta = 0.5\nguidance = 1.5\n"
                        "guidance_interval = [0.2, 0.9]\ntail_gate_db = -50\nband_limit = false\nseconds = 0.3")
    spec = load_spec(write(tmp_path, text))
    check_against_model(spec, default_config)
    assert dict(spec.sounds[0].sampling)["guidance_interval"] == (0.2, 0.9)


def test_load_backend_refuses_a_bad_thread_count():
    from models.errors import ConfigError

    with pytest.raises(ConfigError, match="threads must be a positive integer, got 0"):
        load_backend(None, threads=0)
    assert load_backend(None, threads=1).describe()["threads"] == 1
