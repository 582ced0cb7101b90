"""Settings: defaults, the TOML/JSON file, checks that name the key, command-line overrides, saving."""

from __future__ import annotations

import argparse
import json

import pytest
import tomllib

from companion.cli import serve as cmd_serve
from companion.cli.main import build_parser
from companion.config import settings as settings_mod
from companion.config.padmap import default_config
from companion.config.settings import (
    Settings,
    SettingsError,
    check_setting,
    load_settings,
    save_settings,
    to_toml,
)


def serve_args(*argv):
    return build_parser().parse_args(["serve", *argv])


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(settings_mod, "user_config_dir", lambda *a, **k: str(tmp_path / "config"))
    return tmp_path / "config"


def test_defaults_when_no_file_exists(config_dir):
    assert settings_mod.settings_path() == config_dir / "settings.toml"
    settings = load_settings()
    assert settings == Settings()
    assert settings.osc_host == "127.0.0.1" and settings.osc_port == 9000 and settings.pool_size == 2
    assert settings.params().sampler is None and settings.params().steps is None  # the model's choice


def test_toml_file_is_read_and_flags_override_it(config_dir):
    config_dir.mkdir()
    (config_dir / "settings.toml").write_text(
        'folder = "/music/dd"\nosc_port = 9100\npool_size = 4\nsteps = 30\nallow = ["192.168.1.0/24"]\n'
        'strength = 1\n'
    )
    settings = cmd_serve.settings_from_args(serve_args("--osc-port", "9200", "--pool-categories", "kick", "snare"))
    assert settings.folder == "/music/dd" and settings.pool_size == 4 and settings.steps == 30
    assert settings.osc_port == 9200  # the flag wins
    assert settings.allow == ("192.168.1.0/24",) and settings.pool_categories == ("kick", "snare")
    assert settings.strength == 1.0 and type(settings.strength) is float


def test_save_writes_what_load_reads_back_in_toml_and_json(tmp_path):
    settings = Settings(folder='C:\\Samples "dd"\x7f ü 🥁', steps=12, seconds=1.5, allow=("10.0.0.1",),
                        reply_port=9001)
    for name in ("s.toml", "s.json"):
        path = save_settings(settings, tmp_path / "sub" / name)
        assert load_settings(path) == settings
    text = (tmp_path / "sub" / "s.toml").read_text()
    assert "reply_port = 9001" in text and "model" not in text.split("\n", 2)[2]  # unset keys are left out
    assert tomllib.loads(text)["folder"] == settings.folder
    assert json.loads((tmp_path / "sub" / "s.json").read_text())["steps"] == 12
    assert not list((tmp_path / "sub").glob("*.partial"))


def test_save_settings_flag_writes_the_merged_settings(tmp_path):
    path = tmp_path / "mine.toml"
    args = serve_args("--config", str(path), "--save-settings", "--pool-size", "5", "--seed", "7")
    settings = cmd_serve.settings_from_args(args)  # a missing file is fine when it is about to be written
    save_settings(settings, path)
    assert load_settings(path).pool_size == 5 and load_settings(path).seed == 7


@pytest.mark.parametrize(
    "text, needle, code",
    [
        ("colour = 'red'\n", "unknown setting 'colour'; settings are: folder", "unknown_param"),
        ("osc_port = 70000\n", "osc_port must be in 0..65535, got 70000", "out_of_range"),
        ("steps = 2.5\n", "steps must be an integer, got 2.5", "bad_type"),
        ("sampler = 'euler'\n", "sampler must be one of v-ddim, ", "bad_config"),
        ("strength = 0\n", r"strength must be in (0, 1], got 0.0", "out_of_range"),
        ("allow = '10.0.0.0/8'\n", "allow must be a list of non-empty strings", "bad_type"),
        ("pool_size = true\n", "pool_size must be an integer, got True", "bad_type"),
        ("osc_port = \n", "is not valid TOML", "bad_config"),
    ],
)
def test_bad_files_name_the_file_the_key_and_what_is_allowed(tmp_path, text, needle, code):
    path = tmp_path / "settings.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    assert needle in str(err.value) and str(path) in str(err.value) and err.value.code == code


def test_bad_flags_and_missing_explicit_config(tmp_path):
    with pytest.raises(SettingsError, match="pool_size must be in 0..64, got 99"):
        cmd_serve.settings_from_args(serve_args("--config", str(tmp_path / "x.json"), "--save-settings",
                                                "--pool-size", "99"))
    with pytest.raises(SettingsError, match="does not exist"):
        cmd_serve.settings_from_args(serve_args("--config", str(tmp_path / "absent.toml")))
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(SettingsError, match="must hold a table of keys, got list"):
        load_settings(tmp_path / "list.json")


def test_check_setting_allows_unset_optional_keys_only():
    assert check_setting("steps", None) is None and check_setting("seconds", 2) == 2.0
    assert check_setting("sampler", None) is None  # unset: the model's recommendation
    with pytest.raises(SettingsError, match="format must be set"):
        check_setting("format", None)
    with pytest.raises(SettingsError, match="seconds must be a finite number"):
        check_setting("seconds", float("nan"))
    assert to_toml({"a": True, "b": [], "c": 1.0}).endswith("a = true\nb = []\nc = 1.0\n")


def test_guidance_from_the_file_and_the_flag_round_trips_and_is_checked(tmp_path):
    path = tmp_path / "settings.toml"
    assert Settings().guidance is None and "guidance" in settings_mod.PARAM_KEYS  # unset: the model's
    path.write_text("guidance = 2\n")
    assert load_settings(path).guidance == 2.0 and type(load_settings(path).guidance) is float
    settings = cmd_serve.settings_from_args(serve_args("--config", str(path), "--guidance", "3.5"))
    assert settings.guidance == 3.5 and settings.params().guidance == 3.5  # the flag wins; a live parameter
    save_settings(settings, path)
    assert "guidance = 3.5" in path.read_text() and load_settings(path).guidance == 3.5
    gui = build_parser().parse_args(["gui", "--config", str(path), "--guidance", "1"])
    assert cmd_serve.settings_from_args(gui).guidance == 1.0
    for text, needle, code in (("guidance = 21\n", "guidance must be in 1..20, got 21.0", "out_of_range"),
                               ("guidance = 'strong'\n", "guidance must be a finite number, got 'strong'", "bad_type")):
        path.write_text(text)
        with pytest.raises(SettingsError) as err:
            load_settings(path)
        assert needle in str(err.value) and str(path) in str(err.value) and err.value.code == code
    with pytest.raises(SettingsError, match=r"guidance must be in 1\.\.20, got 0\.5"):
        cmd_serve.settings_from_args(serve_args("--config", str(tmp_path / "new.toml"), "--save-settings",
                                                "--guidance", "0.5"))
    assert "--guidance W" in build_parser()._subparsers._group_actions[0].choices["serve"].format_help()


def test_every_setting_has_a_serve_flag_or_is_file_only():
    flags = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["serve"]._actions
             if isinstance(a, argparse.Action)}
    file_only = {"strength", "audition", "pads"}  # changed at run time (/dd/set, MIDI learn), or in the file
    assert set(settings_mod.SPECS) - file_only <= flags


def custom_pads():
    config = default_config()
    config.update(channel=9, behaviour="keep", stock=0, velocity_curve=1)
    config["pads"] = [{"note": 36, "category": "kick", "choke": 0, "cuts": []},
                      {"note": 40, "category": None, "choke": 2, "cuts": [1, 3]},  # None: the unconditional model
                      {"note": 46, "category": 'open "hat" ü', "choke": 1, "cuts": []}]
    config["modifiers"] = {"regenerate": {"type": "note", "number": 60}, "lock_seed": {"type": "cc", "number": 20}}
    config["params"] = [{"type": "cc", "number": 21, "param": "seconds", "low": 0.1, "high": 2}]
    config["kits"] = [{"name": "lofi", "pads": {"36": "snare", "40": "clap"}, "model": "lofi.safetensors"},
                      {"name": "empty", "pads": {}}]
    return config


def without_none(value):
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    return [without_none(v) for v in value] if isinstance(value, list) else value


@pytest.mark.parametrize("pads", [default_config(), custom_pads()], ids=["default", "custom"])
def test_pad_maps_round_trip_through_toml_exactly(pads):
    data = Settings(live=1, midi_port="MPD218", pads=pads).to_dict()
    text = to_toml(data)
    assert tomllib.loads(text) == without_none(data)  # TOML has no null: None is left out...
    assert Settings().updated(tomllib.loads(text)).pads == pads  # ...and a pad without category reads as None
    assert "\n[pads]\n" in text and "\n[pads.modifiers]\n" in text
    assert text.index("midi_port =") < text.index("[pads]")  # plain keys before every section
    assert '  {note = 36, category = "kick", choke = 0, cuts = []},\n' in text  # one pad per line


def test_nested_tables_and_lists_of_tables_in_toml():
    data = {"a": 1, "t": {"x": [{"k": {"deep": [1, 2]}, "n": None}], "u": {"v": {"w": "y"}}, "s": "z"},
            "odd key": {"1": {}, "": [[{"q": 1.5}]]}}
    assert tomllib.loads(to_toml(data)) == {**data, "t": {**data["t"], "x": [{"k": {"deep": [1, 2]}}]}}
    with pytest.raises(SettingsError, match=r"t.x: cannot save a list holding None"):
        to_toml({"t": {"x": [1, None], "y": {"z": {}}}})


def test_live_rig_keys_round_trip_through_toml_and_json_files(tmp_path):
    settings = Settings(live=1, midi_port="Arturia BeatStep", audio_device="Scarlett 2i2 USB", pads=custom_pads())
    assert settings.to_dict()["pads"]["pads"][1] == {"note": 40, "category": None, "choke": 2, "cuts": [1, 3]}
    for name in ("rig.toml", "rig.json"):
        path = save_settings(settings, tmp_path / name)
        loaded = load_settings(path)
        assert loaded == settings and loaded.pads["pads"][1]["category"] is None
    assert json.loads((tmp_path / "rig.json").read_text())["pads"]["pads"][1]["category"] is None
    assert 'audio_device = "Scarlett 2i2 USB"' in (tmp_path / "rig.toml").read_text()
    assert hash(settings) == hash(settings.updated({"pads": None}))  # still hashable: pads is left out
    partial = load_settings(save_settings(Settings().updated({"pads": {"behaviour": "keep"}}), tmp_path / "p.toml"))
    assert partial.pads == {**default_config(), "behaviour": "keep"}  # keys left out keep their defaults
    int_keys = Settings().updated({"pads": {"kits": [{"name": "k", "pads": {36: "kick"}}]}})
    assert int_keys.pads["kits"][0]["pads"] == {"36": "kick"}  # as TOML and JSON keep keys
    assert load_settings(save_settings(int_keys, tmp_path / "k.toml")) == int_keys
    assert Settings().live == 0 and Settings().pads is None and Settings().midi_port is None


@pytest.mark.parametrize(
    "text, needle",
    [
        ("live = 2\n", "live must be in 0..1, got 2"),
        ("live = true\n", "live must be an integer, got True"),
        ("audio_device = 3\n", "audio_device must be a string, got 3"),
        ("midi_port = ''\n", "midi_port must be a non-empty name (leave it out for the default), got ''"),
        ("pads = 'big'\n", "pads: the pad rack config must be a table, got str"),
        ("[pads]\nbehaviour = 'loud'\n", "pads: behaviour must be one of new, keep, got 'loud'"),
        ("[pads]\npads = [{note = 200, category = 'kick'}]\n", "pads: pad note must be an integer in 0..127, got 200"),
        ("[pads]\ncolour = 1\n", "pads: unknown pad rack key(s) ['colour']; keys are: channel, behaviour"),
        ("[pads.modifiers]\nregenerate = {type = 'cc', number = 128}\n",
         "pads: modifier regenerate number must be an integer in 0..127, got 128"),
        ("[pads]\nkits = [{pads = {kick = 'snare'}}]\n", "pads: kit pads must map notes 0..127 to category names, got 'kick' = 'snare'"),
        ("[pads]\nkits = [{pads = {36 = ''}}]\n", "pads: kit pads must map notes 0..127 to category names, got '36' = ''"),
    ],
)
def test_bad_live_rig_values_name_the_file_the_key_and_what_is_allowed(tmp_path, text, needle):
    path = tmp_path / "settings.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    assert needle in str(err.value) and f"settings file '{path}'" in str(err.value)


def test_serve_live_flags_are_saved_and_read_back(tmp_path):
    path = tmp_path / "X.toml"
    args = serve_args("--save-settings", "--config", str(path), "--live", "--midi", "Foo", "--audio", "Bar")
    save_settings(cmd_serve.settings_from_args(args), path)
    again = cmd_serve.settings_from_args(serve_args("--config", str(path)))
    assert (again.live, again.midi_port, again.audio_device, again.pads) == (1, "Foo", "Bar", None)
    assert cmd_serve.settings_from_args(serve_args("--config", str(path), "--no-live")).live == 0
    assert cmd_serve.settings_from_args(serve_args("--config", str(path), "--audio", "Baz")).audio_device == "Baz"
    fresh = tmp_path / "fresh.toml"
    assert cmd_serve.settings_from_args(serve_args("--config", str(fresh), "--save-settings", "--midi", "X")).live == 1
    assert cmd_serve.settings_from_args(serve_args("--config", str(fresh), "--save-settings")).live == 0


def test_band_limit_from_the_file_and_the_flag_round_trips_and_is_checked(tmp_path):
    path = tmp_path / "settings.toml"
    assert Settings().band_limit is None and "band_limit" in settings_mod.PARAM_KEYS  # unset: the model's band limits, on
    path.write_text("band_limit = 0\n")
    assert load_settings(path).band_limit == 0
    settings = cmd_serve.settings_from_args(serve_args("--config", str(path), "--band-limit", "1"))
    assert settings.band_limit == 1 and settings.params().band_limit == 1  # the flag wins
    save_settings(settings, path)
    assert "band_limit = 1" in path.read_text() and load_settings(path).band_limit == 1
    gui = build_parser().parse_args(["gui", "--config", str(path), "--band-limit", "0"])
    assert cmd_serve.settings_from_args(gui).band_limit == 0
    for text, needle, code in (("band_limit = 2\n", "band_limit must be in 0..1, got 2", "out_of_range"),
                               ("band_limit = 'on'\n", "band_limit must be an integer, got 'on'", "bad_type")):
        path.write_text(text)
        with pytest.raises(SettingsError, match=needle) as err:
            load_settings(path)
        assert err.value.code == code


def test_tail_gate_from_the_file_and_the_flag_round_trips_and_is_checked(tmp_path):
    path = tmp_path / "settings.toml"
    assert Settings().tail_gate is None and "tail_gate" in settings_mod.PARAM_KEYS  # unset: the model's
    path.write_text("tail_gate = -50\n")
    assert load_settings(path).tail_gate == -50.0
    settings = cmd_serve.settings_from_args(serve_args("--config", str(path), "--tail-gate", "0"))
    assert settings.tail_gate == 0.0 and settings.params().tail_gate == 0.0  # the flag wins: off
    save_settings(settings, path)
    assert "tail_gate = 0.0" in path.read_text() and load_settings(path).tail_gate == 0.0
    gui = build_parser().parse_args(["gui", "--config", str(path), "--tail-gate", "-45"])
    assert cmd_serve.settings_from_args(gui).tail_gate == -45.0
    for text, needle in (("tail_gate = -5\n", "tail_gate must be 0 (off) or in -120..-10, got -5.0"),
                         ("tail_gate = 3\n", "tail_gate must be in -120..0, got 3.0")):
        path.write_text(text)
        with pytest.raises(SettingsError, match=needle.replace("(", r"\(").replace(")", r"\)")) as err:
            load_settings(path)
        assert err.value.code == "out_of_range"
