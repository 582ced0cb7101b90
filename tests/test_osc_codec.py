"""The pure half of the OSC layer: wire format, validation against the table, replies, the document."""

from __future__ import annotations

import math
import random
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pythonosc import osc_bundle_builder
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from osc_protocol import docs
from osc_protocol.client import final_replies, format_message, infer_arg
from osc_protocol.codec import (
    IMMEDIATELY,
    MAX_BUNDLE_DEPTH,
    Bundle,
    MalformedPacket,
    Message,
    RequestError,
    decode_packet,
    encode_bundle,
    encode_message,
    encode_reply,
    iter_messages,
    timetag_to_unix,
    to_command,
    unix_to_timetag,
)
from osc_protocol.table import ERRORS, PARAMS, REPLIES, REQUESTS

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ("127.0.0.1", 50000)


def command(address: str, *args):
    return to_command(decode_packet(encode_message(address, *args)), SOURCE)


def refusal(address: str, *args) -> RequestError:
    with pytest.raises(RequestError) as info:
        command(address, *args)
    return info.value


# ---------------------------------------------------------------- wire format


def test_round_trip_of_every_type():
    args = (7, -(2**40), 0.5, "kick ü", b"\x00\x01\x02", True, False, None, [1, ["a", 2.5]], "")
    message = decode_packet(encode_message("/dd/test", *args))
    assert isinstance(message, Message)
    assert message.address == "/dd/test"
    assert message.kinds == "ihfsbTFN[s"
    assert message.args == (7, -(2**40), 0.5, "kick ü", b"\x00\x01\x02", True, False, None, (1, ("a", 2.5)), "")


def test_message_without_type_tags_is_accepted():
    assert decode_packet(b"/dd/ping\x00\x00\x00\x00") == Message("/dd/ping", (), "")


def test_interop_with_python_osc_both_ways():
    builder = OscMessageBuilder("/dd/generate")
    for value in ("kick", 2.0, -1):
        builder.add_arg(value)
    theirs = builder.build().dgram
    assert theirs == encode_message("/dd/generate", "kick", 2.0, -1)
    parsed = OscMessage(encode_message("/dd/variation", "/a b/ü.wav", 0.25, 3))
    assert parsed.address == "/dd/variation"
    assert parsed.params == ["/a b/ü.wav", 0.25, 3]

    inner = OscBundleBuilder(osc_bundle_builder.IMMEDIATELY)
    inner.add_content(OscMessageBuilder("/dd/status").build())
    outer = OscBundleBuilder(time.time() + 10)
    outer.add_content(OscMessageBuilder("/dd/ping").build())
    outer.add_content(inner.build())
    bundle = decode_packet(outer.build().dgram)
    assert isinstance(bundle, Bundle)
    assert [(m.address, tag) for m, tag in iter_messages(bundle)] == [
        ("/dd/ping", bundle.timetag),
        ("/dd/status", IMMEDIATELY),
    ]
    assert abs(timetag_to_unix(bundle.timetag) - (time.time() + 10)) < 1.0

    ours = encode_bundle(encode_message("/a", 1), encode_bundle(encode_message("/b", "x")), timetag=5 << 32)
    parsed_bundle = OscBundle(ours)
    assert parsed_bundle.num_contents == 2
    assert parsed_bundle.content(0).params == [1]


def test_timetags():
    now = time.time()
    assert abs(timetag_to_unix(unix_to_timetag(now)) - now) < 1e-6
    assert timetag_to_unix(IMMEDIATELY) is None
    assert timetag_to_unix(None) is None


def _nested(depth: int) -> bytes:
    packet = encode_message("/dd/ping")
    for _ in range(depth):
        packet = encode_bundle(packet)
    return packet


MALFORMED = {
    "empty": b"",
    "text": b"hello world",
    "address not terminated": b"/dd/ping",
    "address padding cut": b"/dd/ping\x00",
    "tags without comma": b"/dd/ping\x00\x00\x00\x00iii\x00",
    "int cut short": b"/dd/ping\x00\x00\x00\x00,i\x00\x00\x00\x01",
    "leftover bytes": b"/dd/ping\x00\x00\x00\x00,\x00\x00\x00\x00\x00\x00\x01",
    "unknown tag": b"/dd/ping\x00\x00\x00\x00,x\x00\x00\x00\x00\x00\x01",
    "unclosed array": b"/dd/ping\x00\x00\x00\x00,[\x00\x00",
    "stray ]": b"/dd/ping\x00\x00\x00\x00,]\x00\x00",
    "bad utf-8": b"/dd/\xff\x00\x00\x00",
    "blob too long": b"/b\x00\x00,b\x00\x00" + struct.pack(">i", 100) + b"abcd",
    "negative blob": b"/b\x00\x00,b\x00\x00" + struct.pack(">i", -4),
    "bundle header cut": b"#bundle\x00\x00\x00",
    "bundle element too big": b"#bundle\x00" + b"\x00" * 7 + b"\x01" + struct.pack(">i", 64) + b"/a\x00\x00",
    "bundle element size 0": b"#bundle\x00" + b"\x00" * 7 + b"\x01" + struct.pack(">i", 0),
    "bundle element garbage": encode_bundle(b"xxxx"),
    "bundle element not aligned": b"#bundle\x00" + b"\x00" * 7 + b"\x01" + struct.pack(">i", 3) + b"/a\x00\x00",
    "bundles too deep": _nested(MAX_BUNDLE_DEPTH + 1),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_packets_raise_malformed(data):
    with pytest.raises(MalformedPacket):
        decode_packet(data)


def test_deepest_allowed_bundle_decodes():
    messages = list(iter_messages(decode_packet(_nested(MAX_BUNDLE_DEPTH))))
    assert [m.address for m, _ in messages] == ["/dd/ping"]


def test_fuzzed_bytes_only_ever_raise_malformed():
    rng = random.Random(1234)
    seeds = [
        encode_message("/dd/generate", "kick", 2, -1),
        encode_bundle(encode_message("/dd/ping", 1), encode_bundle(encode_message("/dd/status"))),
        encode_message("/x", b"blob", [1, 2.0], "s", None, True),
    ]
    decoded = 0
    for i in range(4000):
        if i % 2:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64)))
            if rng.random() < 0.5:
                data = rng.choice((b"/", b"#bundle\x00")) + data
        else:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.getrandbits(8)
            data = bytes(data[: rng.randrange(len(data) + 1)])
        try:
            decode_packet(data)
            decoded += 1
        except MalformedPacket:
            pass
    assert decoded > 50  # the mutations must sometimes still be valid OSC, or the fuzz tests nothing


def test_encoding_refuses_what_osc_cannot_carry():
    with pytest.raises(ValueError, match="start with '/'"):
        encode_message("dd/ping")
    with pytest.raises(ValueError, match="NUL"):
        encode_message("/a", "x\x00y")
    with pytest.raises(TypeError, match="cannot send dict"):
        encode_message("/a", {})
    with pytest.raises(ValueError, match="64 bits"):
        encode_message("/a", 2**70)
    with pytest.raises(ValueError, match="multiple of 4"):
        encode_bundle(b"/a\x00")


# ---------------------------------------------------------------- validation


def test_generate_fills_defaults_and_keeps_the_source():
    cmd = command("/dd/generate", "kick")
    assert cmd.name == "generate"
    assert dict(cmd.args) == {"category": "kick", "count": 1, "seed": -1}
    assert cmd.source == SOURCE
    with pytest.raises(TypeError):
        cmd.args["count"] = 3  # the mapping is read-only


def test_tolerant_numbers():
    cmd = command("/dd/generate", "kick", 4.0, 1234.0)  # Max and Pd send floats
    assert cmd.args["count"] == 4 and type(cmd.args["count"]) is int
    assert type(cmd.args["seed"]) is int
    cmd = command("/dd/variation", "/a.wav", 1, 2)  # an int where a float is expected
    assert cmd.args["strength"] == 1.0 and type(cmd.args["strength"]) is float
    assert cmd.args["count"] == 2
    # 64-bit ints, doubles and symbols count as i, f and s
    data = b"/dd/variation\x00\x00\x00,Sdh\x00\x00\x00\x00/a\x00\x00" + struct.pack(">d", 0.5) + struct.pack(">q", 3)
    cmd = to_command(decode_packet(data), SOURCE)
    assert dict(cmd.args) == {"path": "/a", "strength": 0.5, "count": 3, "seed": -1}


CASES = [
    (("/dd/generat", "kick"), "unknown_address", "did you mean /dd/generate"),
    (("/dd/*",), "unknown_address", "patterns are not supported"),
    (("/dd/generate",), "missing_argument", "missing argument category"),
    (("/dd/generate", "kick", 1, 2, 3), "too_many_arguments", "at most 3 arguments, got 4"),
    (("/dd/ping", 1, 2), "too_many_arguments", "at most 1 argument, got 2"),
    (("/dd/generate", "kick", 2.5), "bad_type", "count must be an integer, got 2.5 (float)"),
    (("/dd/generate", 36), "bad_type", "category must be a string, got 36 (int)"),
    (("/dd/generate", "kick", "two"), "bad_type", "count must be an integer, got 'two' (string)"),
    (("/dd/pad/trigger", True), "bad_type", "pad must be an integer"),
    (("/dd/variation", "/a.wav", "x"), "bad_type", "strength must be a number"),
    (("/dd/generate", "kick", 100), "out_of_range", "count must be in range 1..64, got 100"),
    (("/dd/generate", "kick", 1, -2), "out_of_range", "seed must be in range -1..2147483647, got -2"),
    (("/dd/variation", "/a.wav", 1.5), "out_of_range", "strength must be in range 0..1, got 1.5"),
    (("/dd/variation", "/a.wav", math.nan), "out_of_range", "strength must be a finite number"),
    (("/dd/pad/trigger", 36, 0), "out_of_range", "velocity must be in range 1..127, got 0"),
    (("/dd/generate", ""), "bad_value", "category must not be empty"),
    (("/dd/set", "stepz", 4), "unknown_param", "unknown setting 'stepz'"),
    (("/dd/get", "volume"), "unknown_param", "settings are: steps"),
    (("/dd/set", "steps", 0), "out_of_range", "steps must be in range 1..1000, got 0"),
    (("/dd/set", "steps", 12.5), "bad_type", "steps must be an integer"),
    (("/dd/set", "sampler", 3), "bad_type", "sampler must be a string"),
    (("/dd/set", "steps"), "missing_argument", "missing argument value"),
    (("/dd/set", "guidance", 20.5), "out_of_range", "guidance must be in range 1..20, got 20.5"),
    (("/dd/set", "guidance", 0.5), "out_of_range", "guidance must be in range 1..20, got 0.5"),
    (("/dd/set", "guidance", "strong"), "bad_type", "guidance must be a number, got 'strong' (string)"),
    (("/dd/reply/subscribe", "127.0.0.1"), "missing_argument", "missing argument port"),
    (("/dd/reply/subscribe", 70000), "out_of_range", "port must be in range 1..65535"),
]


@pytest.mark.parametrize(("message", "code", "text"), CASES, ids=[f"{c[1]}:{c[0][0]}" for c in CASES])
def test_refusals_name_the_value_and_what_is_allowed(message, code, text):
    error = refusal(*message)
    assert error.code == code
    assert code in ERRORS
    assert text in error.message
    if code != "unknown_address":
        assert error.message.startswith(message[0] + ": ")


def test_settings_are_typed_by_the_settings_table():
    assert dict(command("/dd/set", "steps", 50.0).args) == {"param": "steps", "value": 50}
    assert dict(command("/dd/set", "strength", 1).args) == {"param": "strength", "value": 1.0}
    assert dict(command("/dd/set", "guidance", 3).args) == {"param": "guidance", "value": 3.0}
    assert dict(command("/dd/set", "sampler", "v-ddim").args) == {"param": "sampler", "value": "v-ddim"}
    assert dict(command("/dd/get", "seed").args) == {"param": "seed"}


def test_leading_optional_argument_is_recognised_by_its_type():
    assert dict(command("/dd/reply/subscribe", 9001).args) == {"host": None, "port": 9001}
    assert dict(command("/dd/reply/subscribe", "127.0.0.1", 9001.0).args) == {"host": "127.0.0.1", "port": 9001}
    assert dict(command("/dd/reply/unsubscribe").args) == {"port": None}


def test_every_example_in_the_table_is_a_valid_request():
    for spec in REQUESTS.values():
        cmd = command(spec.address, *spec.example)
        assert cmd.name == spec.name and cmd.address == spec.address
        assert set(cmd.args) == {a.name for a in spec.args}


def test_table_is_consistent():
    names = [spec.name for spec in REQUESTS.values()]
    assert len(names) == len(set(names))
    for spec in REQUESTS.values():
        assert spec.address.startswith("/dd/")
        for reply in (*spec.replies, *spec.interim):
            assert reply in REPLIES, f"{spec.address} names unknown reply {reply}"
        seen_optional = False
        for arg in spec.args:  # optional arguments only trail, except a leading one told apart by type
            if arg.optional:
                seen_optional = True
            elif seen_optional:
                assert spec.address == "/dd/reply/subscribe"
    for param in PARAMS.values():
        assert param.type in ("i", "f", "s")
    required = {"/dd/ping", "/dd/status", "/dd/models", "/dd/model/load", "/dd/categories", "/dd/generate",
                "/dd/variation", "/dd/morph", "/dd/pad/trigger", "/dd/pad/regenerate", "/dd/set", "/dd/cancel",
                "/dd/reply/subscribe", "/dd/reply/unsubscribe"}
    assert required <= set(REQUESTS)
    assert {"/dd/done", "/dd/progress", "/dd/error", "/dd/pong"} <= set(REPLIES)
    assert {"steps", "sampler", "strength", "seconds", "pool_size"} <= set(PARAMS)


def test_the_settings_table_matches_the_engines_live_parameters():
    from companion.config.settings import PARAM_KEYS, SPECS
    from models.config import MAX_GUIDANCE

    assert set(PARAMS) == set(PARAM_KEYS)
    assert (PARAMS["guidance"].type, PARAMS["guidance"].low, PARAMS["guidance"].high) == ("f", 1.0, MAX_GUIDANCE)
    assert (SPECS["guidance"].low, SPECS["guidance"].high) == (1.0, MAX_GUIDANCE)
    from models.finish import TAIL_GATE_RANGE

    # the OSC table imports nothing from models/: its copies of the limits must follow the model's
    assert (PARAMS["tail_gate"].type, PARAMS["tail_gate"].low, PARAMS["tail_gate"].high) == ("f", TAIL_GATE_RANGE[0], 0.0)
    assert (PARAMS["band_limit"].type, PARAMS["band_limit"].low, PARAMS["band_limit"].high) == ("i", 0, 1)
    assert (SPECS["band_limit"].type, SPECS["band_limit"].low, SPECS["band_limit"].high) == (int, 0, 1)


def test_every_error_code_the_code_raises_is_documented():
    raised = set()
    for name in ("codec.py", "server.py"):
        text = (ROOT / "osc_protocol" / name).read_text(encoding="utf-8")
        raised |= set(re.findall(r"""(?:RequestError\(|error\(-1, |_refuse\(source, )\s*"([a-z_]+)\"""", text))
    assert raised >= {"unknown_address", "bad_type", "out_of_range", "not_allowed", "unavailable", "malformed"}
    assert raised <= set(ERRORS), raised - set(ERRORS)


# ---------------------------------------------------------------- replies


def test_replies_are_checked_against_the_reply_table():
    data = encode_reply("/dd/done", 3, "/s/a.wav", Path("/s/b.wav"))
    assert decode_packet(data) == Message("/dd/done", (3, "/s/a.wav", "/s/b.wav"), "iss")
    assert decode_packet(encode_reply("/dd/progress", 1, 1)).args == (1, 1.0)  # int fraction becomes f
    assert decode_packet(encode_reply("/dd/models")).args == ()
    assert decode_packet(encode_reply("/dd/param", "sampler", "v-ddim")).kinds == "ss"
    with pytest.raises(ValueError, match="needs path"):
        encode_reply("/dd/done", 3)
    with pytest.raises(ValueError, match="not a reply address"):
        encode_reply("/dd/finished", 3, "x")
    with pytest.raises(ValueError, match="takes 2 arguments"):
        encode_reply("/dd/progress", 1, 0.5, 7)
    with pytest.raises(TypeError, match="fraction must be a number"):
        encode_reply("/dd/progress", 1, "half")
    with pytest.raises(TypeError, match="job must be an integer"):
        encode_reply("/dd/error", True, "internal", "x")


# ---------------------------------------------------------------- client helpers


def test_command_line_arguments_are_typed_by_their_look():
    assert [infer_arg(w) for w in ("kick", "4", "-1", "0.5", "-.5", "1e3", "s:808", "i:7", "f:1", "f:\\x", "inf")] == [
        "kick", 4, -1, 0.5, -0.5, 1000.0, "808", 7, 1.0, "f:\\x", "inf",
    ]
    assert type(infer_arg("f:1")) is float
    assert format_message("/dd/done", (3, "/a b.wav", 0.25)) == "/dd/done 3 '/a b.wav' 0.25"
    assert final_replies("/dd/ping") == ("/dd/pong", "/dd/error")
    assert final_replies("/not/in/table") == ("/dd/done", "/dd/error")


# ---------------------------------------------------------------- the document and the layering


def test_docs_osc_md_is_up_to_date():
    path = ROOT / "docs" / "OSC.md"
    assert path.read_text(encoding="utf-8") == docs.render(), "run: python -m osc_protocol.docs"
    assert docs.main(["--check"]) == 0


def test_docs_check_notices_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "OSC.md"
    stale.write_text("old\n", encoding="utf-8")
    assert docs.main(["--check", "--output", str(stale)]) == 1
    assert docs.main(["--output", str(stale)]) == 0
    assert docs.main(["--check", "--output", str(stale)]) == 0


def test_docs_cover_every_address_setting_and_code():
    text = docs.render()
    for name in (*REQUESTS, *REPLIES, *PARAMS, *ERRORS):
        assert f"`{name}" in text or f"### {name}" in text, name


def test_osc_protocol_imports_neither_torch_nor_qt():
    code = (
        "import sys, osc_protocol.server, osc_protocol.client, osc_protocol.docs; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'PySide6', 'numpy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
