"""The hand-written RIFF/WAVE encoder, checked against libsndfile (through soundfile) as the reader."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import soundfile as sf

from companion.output import wavfile
from companion.output.wavfile import AcidInfo, WavError
from models.errors import DDError

SFC_GET_LOOP_INFO = 0x10E0  # libsndfile's command for the parsed acid chunk
SF_LOOP_NONE, SF_LOOP_FORWARD = 800, 801


def _noise(channels: int, frames: int, scale: float = 0.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((channels, frames)) * scale).astype(np.float32)


def _write(tmp_path, audio, rate=48000, name="x.wav", **kw):
    path = tmp_path / name
    path.write_bytes(wavfile.encode_wav(audio, rate, **kw))
    return path


def _libsndfile_loop_info(path):
    """(numerator, denominator, loop mode, beats, bpm, root key) as libsndfile parses the acid chunk."""
    from soundfile import _ffi, _snd

    buf = _ffi.new("char[]", 44)  # sizeof(SF_LOOP_INFO)
    with sf.SoundFile(path) as f:
        ok = _snd.sf_command(f._file, SFC_GET_LOOP_INFO, buf, 44)
    return struct.unpack("<hhiifi", bytes(_ffi.buffer(buf))[:20]) if ok else None


def test_pcm24_reads_back_bit_exact_with_clipping(tmp_path):
    audio = _noise(2, 5000, scale=0.6)
    audio[0, :4] = [1.0, -1.0, 2.5, -3.0]  # full scale and overs
    path = _write(tmp_path, audio, 44100)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.frames, info.subtype, info.format) == (
        44100,
        2,
        5000,
        "PCM_24",
        "WAV",
    )
    ints, _ = sf.read(path, dtype="int32")
    expected = np.rint(np.clip(audio.T.astype(np.float64), -1, 1) * 8388607).astype(np.int64) << 8
    np.testing.assert_array_equal(ints, expected)
    assert ints[:4, 0].tolist() == [8388607 << 8, -8388607 << 8, 8388607 << 8, -8388607 << 8]
    floats, _ = sf.read(path, dtype="float32")
    assert floats.shape == (5000, 2)
    np.testing.assert_allclose(floats, np.clip(audio.T, -1, 1), atol=1.5 / 2**23)


def test_float_is_bit_exact_unclipped_and_has_fact_chunk(tmp_path):
    audio = _noise(2, 3001, scale=0.8)
    audio[1, 0] = 1.75  # float WAV keeps overs
    path = _write(tmp_path, audio, subtype="FLOAT")
    assert sf.info(path).subtype == "FLOAT"
    back, rate = sf.read(path, dtype="float32")
    assert rate == 48000
    np.testing.assert_array_equal(back, audio.T)
    chunks = wavfile.read_chunks(path)
    assert struct.unpack("<HHIIHHH", chunks["fmt "]) == (3, 2, 48000, 48000 * 8, 8, 32, 0)
    assert struct.unpack("<I", chunks["fact"]) == (3001,)


def test_pcm16_and_mono_odd_length_is_padded(tmp_path):
    audio = _noise(1, 7, scale=0.3)  # mono 24-bit: 21 data bytes, needs a pad byte
    path = _write(tmp_path, audio)
    raw = path.read_bytes()
    assert len(raw) % 2 == 0
    assert struct.unpack("<I", raw[4:8])[0] == len(raw) - 8
    back, _ = sf.read(path, dtype="float32", always_2d=True)
    assert back.shape == (7, 1)
    np.testing.assert_allclose(back[:, 0], audio[0], atol=1.5 / 2**23)

    p16 = _write(tmp_path, _noise(2, 100), name="y.wav", subtype="PCM_16")
    assert sf.info(p16).subtype == "PCM_16"
    ints, _ = sf.read(p16, dtype="int16")
    np.testing.assert_array_equal(ints, np.rint(np.clip(_noise(2, 100).T, -1, 1) * 32767).astype(np.int16))


def test_long_audio_spans_several_blocks(tmp_path):
    frames = 2 * 65536 + 5
    audio = _noise(2, frames, scale=0.2, seed=3)
    path = _write(tmp_path, audio, subtype="FLOAT")
    back, _ = sf.read(path, dtype="float32")
    np.testing.assert_array_equal(back, audio.T)


def test_info_chunk_round_trips_and_libsndfile_reads_it(tmp_path):
    recipe = {"model": "kicks-v2", "seed": 42, "sources": ["/tmp/ä.wav"], "steps": 50}
    info = {
        "INAM": "dd_kick_42_0001",
        "ISFT": "dd-companion 0.1.0",
        "ICMT": json.dumps(recipe, separators=(",", ":")),
        "IGNR": "Kick",
        "ICRD": "2024-05-06",
    }
    path = _write(tmp_path, _noise(2, 10), info=info)
    assert wavfile.read_info(path) == info
    assert wavfile.read_recipe(path) == recipe
    with sf.SoundFile(path) as f:
        meta = f.copy_metadata()
        assert f.frames == 10
    assert meta["title"] == "dd_kick_42_0001"
    assert meta["software"] == "dd-companion 0.1.0"
    assert meta["genre"] == "Kick"
    assert meta["date"] == "2024-05-06"
    assert json.loads(meta["comment"]) == recipe


def test_read_recipe_ignores_foreign_comments_and_missing_info(tmp_path):
    assert wavfile.read_recipe(_write(tmp_path, _noise(1, 4), info={"ICMT": "recorded live"})) is None
    plain = _write(tmp_path, _noise(1, 4), name="plain.wav")
    assert wavfile.read_info(plain) == {}
    assert wavfile.read_recipe(plain) is None
    assert wavfile.read_acid(plain) is None


@pytest.mark.parametrize(
    "acid, expected",
    [
        (AcidInfo(), (4, 4, SF_LOOP_NONE, 0, 0.0, -1)),
        (
            AcidInfo(one_shot=False, root_note=60, beats=8, tempo=95.0, meter=(3, 4)),
            (3, 4, SF_LOOP_FORWARD, 8, 95.0, 60),
        ),
    ],
)
def test_acid_chunk_round_trips_and_libsndfile_agrees(tmp_path, acid, expected):
    path = _write(tmp_path, _noise(2, 64), acid=acid, info={"INAM": "x"})
    assert wavfile.read_acid(path) == acid
    assert _libsndfile_loop_info(path) == expected
    assert sf.read(path)[0].shape == (64, 2)  # the extra chunk does not disturb readers


def test_acid_flags():
    assert AcidInfo().flags == wavfile.ACID_ONE_SHOT
    assert AcidInfo(one_shot=False).flags == 0
    assert AcidInfo(one_shot=False, tempo=120.0, beats=4).flags == wavfile.ACID_STRETCH
    assert AcidInfo(root_note=36).flags == wavfile.ACID_ONE_SHOT | wavfile.ACID_ROOT_NOTE_SET
    assert len(AcidInfo().to_bytes()) == 24


@pytest.mark.parametrize(
    "audio, kwargs, needle",
    [
        (np.zeros((100, 2), np.float32), {}, "transpose"),
        (np.zeros(100, np.float32), {}, "2-D"),
        (np.zeros((2, 0), np.float32), {}, "at least one frame"),
        (np.zeros((2, 10), np.int16), {}, "int16"),
        (np.array([[0.0, np.nan, np.inf]], np.float32), {}, "2 NaN or infinite"),
        (np.zeros((2, 10), np.float32), {"subtype": "PCM_8"}, "PCM_8"),
        (np.zeros((2, 10), np.float32), {"rate": 12.5}, "12.5"),
        (np.zeros((2, 10), np.float32), {"info": {"NAME!": "x"}}, "NAME!"),
        (np.zeros((2, 10), np.float32), {"info": {"INAM": 3}}, "INAM"),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_it(audio, kwargs, needle):
    rate = kwargs.pop("rate", 48000)
    with pytest.raises(WavError) as err:
        wavfile.encode_wav(audio, rate, **kwargs)
    assert needle in str(err.value)
    assert isinstance(err.value, DDError) and err.value.code == "bad_wav"


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"root_note": 128}, "128"),
        ({"tempo": -1.0}, "-1.0"),
        ({"meter": (4, 3)}, "4/3"),
        ({"beats": -2}, "-2"),
    ],
)
def test_bad_acid_values(kwargs, needle):
    with pytest.raises(WavError, match=needle):
        AcidInfo(**kwargs)


def test_reader_rejects_non_wav_and_truncated_files(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"ID3\x03hello world")
    with pytest.raises(WavError, match="not a RIFF/WAVE"):
        wavfile.read_info(junk)
    good = _write(tmp_path, _noise(2, 10), info={"INAM": "a long enough title"})
    raw = good.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(raw[: raw.index(b"LIST") + 20])
    with pytest.raises(WavError, match="ends early"):
        wavfile.read_info(cut)
