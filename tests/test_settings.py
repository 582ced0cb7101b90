"""Settings: defaults, the TOML/JSON file, checks that name the key, command-line overrides, saving."""

from __future__ import annotations

import argparse
import json

import pytest
import tomllib

from companion import cmd_serve
from companion import settings as settings_mod
from companion.cli import build_parser
from companion.settings import Settings, SettingsError, check_setting, load_settings, save_settings, to_toml
from models.samplers import DEFAULT_SAMPLER


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
    assert settings.params().sampler == DEFAULT_SAMPLER and settings.params().steps is None


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
    with pytest.raises(SettingsError, match="sampler must be set"):
        check_setting("sampler", None)
    with pytest.raises(SettingsError, match="seconds must be a finite number"):
        check_setting("seconds", float("nan"))
    assert to_toml({"a": True, "b": [], "c": 1.0}).endswith("a = true\nb = []\nc = 1.0\n")


def test_every_setting_has_a_serve_flag_or_is_file_only():
    flags = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["serve"]._actions
             if isinstance(a, argparse.Action)}
    file_only = {"strength", "audition"}  # changed at run time with /dd/set, or in the file
    assert set(settings_mod.SPECS) - file_only <= flags
