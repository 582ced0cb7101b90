"""OSCQuery: the namespace built from the table, and a real HTTP client against a real `serve` subprocess."""

from __future__ import annotations

import errno
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf

from companion.config.settings import Settings
from companion.service import mdns
from companion.service.resident import Companion
from osc_protocol.client import OscClient
from osc_protocol.oscquery import Live, find, namespace
from osc_protocol.table import PARAMS, REQUESTS, STATE

REPO = Path(__file__).resolve().parents[1]
WAIT = 30.0
TAGS = {"i": "i", "f": "f", "s": "s", "param": "s", "value": "f"}  # the table's argument types on the wire
ATTRIBUTES = {"FULL_PATH", "CONTENTS", "TYPE", "DESCRIPTION", "ACCESS", "RANGE", "VALUE"}


def check_node(node, path="/"):
    """Validate one OSCQuery node and everything under it; return {FULL_PATH: node} for every node."""
    assert isinstance(node, dict) and set(node) <= ATTRIBUTES, sorted(node)
    assert node["FULL_PATH"] == path
    assert node["ACCESS"] in (0, 1, 2, 3) and isinstance(node["DESCRIPTION"], str) and node["DESCRIPTION"]
    nodes = {path: node}
    if "TYPE" in node:
        tags = node["TYPE"]
        assert re.fullmatch(r"[ifsb]*", tags), tags
        if "RANGE" in node:
            assert len(node["RANGE"]) == len(tags)
            for tag, entry in zip(tags, node["RANGE"], strict=True):
                assert entry is None or (isinstance(entry, dict) and entry and set(entry) <= {"MIN", "MAX", "VALS"})
                if entry and "VALS" in entry:
                    assert entry["VALS"] and all(isinstance(v, str if tag == "s" else (int, float)) for v in entry["VALS"])
                if entry and "MIN" in entry and "MAX" in entry:
                    assert entry["MIN"] <= entry["MAX"]
        if "VALUE" in node:
            assert len(node["VALUE"]) == len(tags) and node["ACCESS"] in (1, 3)
            for tag, value in zip(tags, node["VALUE"], strict=True):
                assert isinstance(value, {"i": int, "f": (int, float), "s": str}[tag]), (path, value)
    else:
        assert "CONTENTS" in node and "VALUE" not in node and node["ACCESS"] == 0
    for name, child in node.get("CONTENTS", {}).items():
        assert "/" not in name
        nodes.update(check_node(child, path.rstrip("/") + "/" + name))
    return nodes


def test_the_namespace_is_the_table():
    nodes = check_node(namespace())
    for address, request in REQUESTS.items():
        node = nodes[address]
        assert node["TYPE"] == "".join(TAGS[a.type] for a in request.args), address
        assert node["ACCESS"] == 2 and request.meaning in node["DESCRIPTION"]
    methods = {path for path, node in nodes.items() if node["ACCESS"] == 2}
    assert methods == set(REQUESTS)  # and nothing writable the dispatcher does not serve
    generate = nodes["/dd/generate"]
    assert generate["RANGE"] == [None, {"MIN": 1, "MAX": 64}, {"MIN": -1, "MAX": 2**31 - 1}]  # no model: any category
    assert nodes["/dd/set"]["RANGE"][0] == {"VALS": list(PARAMS)}
    assert nodes["/dd/state/engine"]["RANGE"] == [{"VALS": ["idle", "busy", "loading"]}]
    assert {f"/dd/state/settings/{p}" for p in PARAMS} <= set(nodes)
    assert nodes["/dd/state/settings/steps"]["RANGE"] == [{"MIN": 1, "MAX": 1000}]


def test_live_values_fill_the_namespace():
    live = Live(state={"engine": "busy", "model": "drums", "backend": "onnx-cpu", "queued": 2},
                categories=("kick", "tom"), pool={"kick": 2, "tom": 0}, pool_size=2, settings={"steps": 30})
    nodes = check_node(namespace(live))
    assert nodes["/dd/generate"]["RANGE"][0] == {"VALS": ["kick", "tom"]}
    assert nodes["/dd/state/engine"]["VALUE"] == ["busy"] and nodes["/dd/state/queued"]["VALUE"] == [2]
    assert nodes["/dd/state/pool/kick"]["VALUE"] == [2] and nodes["/dd/state/pool/tom"]["RANGE"] == [{"MIN": 0, "MAX": 2}]
    assert nodes["/dd/state/settings/steps"]["VALUE"] == [30]
    assert find(namespace(live), "/dd/state/pool/")["FULL_PATH"] == "/dd/state/pool"


# ---------------------------------------------------------------- a real serve


def get(url, timeout=10.0):
    """(status, parsed JSON or text) over a real HTTP connection."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read().decode("utf-8")
            status = response.status
            kind = response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")
    return status, (json.loads(body) if kind == "application/json" else body)


@pytest.fixture(scope="module")
def served(tmp_path_factory, model_file):
    """`dd-companion serve` as a subprocess: (process, OSC port, OSCQuery base URL, output folder)."""
    tmp = tmp_path_factory.mktemp("oscquery")
    (tmp / "settings.json").write_text("{}")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "companion", "serve", "--config", str(tmp / "settings.json"), "--folder",
         str(tmp / "out"), "--osc-port", "0", "--model", str(model_file), "--device", "cpu", "--steps", "3",
         "--pool-size", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "ready" in line:
            break
    text = "".join(lines)
    osc = re.search(r"OSC on udp://127\.0\.0\.1:(\d+)", text)
    http = re.search(r"OSCQuery on (http://127\.0\.0\.1:\d+/)", text)
    assert osc and http and "mDNS: off (listening on loopback only" in text, text
    yield proc, int(osc.group(1)), http.group(1), tmp / "out"
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


def test_serve_answers_the_namespace_over_http(served):
    proc, osc_port, base, _ = served
    status, tree = get(base)
    assert status == 200
    nodes = check_node(tree)
    for address, request in REQUESTS.items():  # every address of the table, with its type tags
        assert nodes[address]["TYPE"] == "".join(TAGS[a.type] for a in request.args), address
    assert nodes["/dd/generate"]["RANGE"][0] == {"VALS": ["kick", "snare", "clap"]}  # the loaded model's
    assert get(base + "dd/generate") == (200, nodes["/dd/generate"])
    assert get(base + "dd/generate?TYPE") == (200, {"TYPE": "sii"})
    assert get(base + "dd/state/model?VALUE") == (200, {"VALUE": ["tiny"]})
    assert nodes["/dd/state/engine"]["VALUE"][0] in STATE["engine"].choices
    assert nodes["/dd/state/settings/steps"]["VALUE"] == [3]
    status, text = get(base + "dd/no/such")
    assert status == 404 and "/dd/no/such" in text
    assert get(base + "dd/generate?COLOUR")[0] == 400
    assert get(base + "dd?VALUE")[0] == 204  # a container has no value


def test_host_info_names_the_osc_endpoint(served):
    proc, osc_port, base, _ = served
    status, info = get(base + "?HOST_INFO")
    assert status == 200
    assert (info["OSC_IP"], info["OSC_PORT"], info["OSC_TRANSPORT"]) == ("127.0.0.1", osc_port, "UDP")
    assert info["NAME"] == "dd-companion" and info["EXTENSIONS"]["VALUE"] is True and info["EXTENSIONS"]["LISTEN"] is False
    with OscClient(info["OSC_IP"], info["OSC_PORT"], timeout=WAIT) as client:
        assert client.request("/dd/ping", 3) == ("/dd/pong", (3,))


def test_pool_fill_is_readable_as_value(served):
    proc, osc_port, base, _ = served
    deadline = time.monotonic() + WAIT
    fill = None
    while fill != [1] and time.monotonic() < deadline:  # the pool (size 1) fills in the background
        fill = get(base + "dd/state/pool/kick?VALUE")[1].get("VALUE")
        time.sleep(0.1)
    assert fill == [1]
    assert get(base + "dd/state/pool/kick?RANGE") == (200, {"RANGE": [{"MIN": 0, "MAX": 1}]})


def test_a_controller_drives_the_companion_from_the_namespace_alone(served):
    proc, osc_port, base, folder = served
    info = get(base + "?HOST_INFO")[1]
    tree = get(base)[1]
    generate = next(n for n in check_node(tree).values() if n["FULL_PATH"].endswith("/generate") and n["ACCESS"] & 2)
    args = []
    for tag, entry in zip(generate["TYPE"], generate["RANGE"], strict=True):  # the first allowed value of each
        if entry and "VALS" in entry:
            args.append(entry["VALS"][0])
        elif entry and "MIN" in entry:
            args.append(int(entry["MIN"]) if tag == "i" else float(entry["MIN"]))
        else:
            args.append({"i": 0, "f": 0.0, "s": ""}[tag])
    with OscClient(info["OSC_IP"], info["OSC_PORT"], timeout=WAIT) as client:
        address, reply = client.request(generate["FULL_PATH"], *args, expect=("/dd/done", "/dd/error"))
    assert address == "/dd/done", reply
    path = Path(reply[1])
    assert path.is_file() and folder in path.parents and sf.read(path)[0].shape == (512, 2)


def test_a_stuck_http_client_blocks_neither_osc_nor_other_http_clients(served):
    proc, osc_port, base, _ = served
    host, port = re.match(r"http://([\d.]+):(\d+)/", base).groups()
    with socket.create_connection((host, int(port))) as stuck:  # connects and never sends a request
        stuck.sendall(b"GET / HT")
        t0 = time.monotonic()
        assert get(base + "?HOST_INFO", timeout=3.0)[0] == 200
        with OscClient("127.0.0.1", osc_port, timeout=WAIT) as client:
            assert client.request("/dd/ping", 1) == ("/dd/pong", (1,))
        assert time.monotonic() - t0 < 3.0
    conn = http.client.HTTPConnection(host, int(port), timeout=5)  # keep-alive: two requests, one connection
    conn.request("GET", "/dd/ping?TYPE")
    assert json.loads(conn.getresponse().read()) == {"TYPE": "i"}
    conn.request("GET", "/dd/status?TYPE")
    assert json.loads(conn.getresponse().read()) == {"TYPE": ""}
    conn.close()


# ---------------------------------------------------------------- ports, allow-list, mDNS (in-process)


@pytest.fixture
def companion_with(tmp_path, model_file):
    running = []

    def start(**overrides):
        settings = Settings(folder=str(tmp_path / "out"), osc_port=0, model=str(model_file), device="cpu",
                            steps=3, pool_size=0).updated(overrides)
        companion = Companion(settings)
        running.append(companion)
        companion.start()
        return companion

    yield start
    for companion in running:
        companion.stop()


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_allow_list_applies_to_oscquery_too(companion_with):
    companion = companion_with(osc_host="127.0.0.1", allow=("10.0.0.0/8",), mdns=0)  # loopback not allowed
    status, text = get(companion.oscquery.url)
    assert status == 403 and "allow-list" in text
    companion2 = companion_with(osc_host="127.0.0.1", allow=("127.0.0.1",), mdns=0)
    assert get(companion2.oscquery.url + "?HOST_INFO")[0] == 200


def test_oscquery_port_default_explicit_taken_and_off(companion_with, tmp_path, model_file):
    osc = free_port(socket.SOCK_DGRAM)
    companion = companion_with(osc_port=osc)
    if companion.oscquery.address[1] != osc + 1:  # someone else held osc + 1: the fallback below covers that
        pytest.fail(f"port {osc + 1} was taken by another program; rerun")
    assert companion.describe()[1].startswith(f"OSCQuery on http://127.0.0.1:{osc + 1}/")
    with socket.socket() as holder:  # the default port taken: any free port, said in the log
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        osc2 = holder.getsockname()[1] - 1
        try:
            companion2 = companion_with(osc_port=osc2)
        except OSError as exc:  # the UDP port osc2 itself was taken: not what this test is about
            pytest.fail(f"UDP port {osc2} was taken ({exc}); rerun")
        assert companion2.oscquery.address[1] not in (0, osc2 + 1)
        explicit = Companion(Settings(folder=str(tmp_path / "o3"), osc_port=0, model=str(model_file), device="cpu",
                                      oscquery_port=holder.getsockname()[1]))
        with pytest.raises(OSError) as err:  # an explicit port taken is an error naming it
            explicit.start()
        explicit.stop()
        assert err.value.errno == errno.EADDRINUSE and f":{holder.getsockname()[1]} (TCP)" in str(err.value)
    off = companion_with(oscquery_port=-1)
    assert off.oscquery is None and "OSCQuery: off" in off.describe()


def test_bad_oscquery_settings_are_refused():
    from companion.config.settings import SettingsError

    with pytest.raises(SettingsError, match=r"oscquery_port must be in -1\.\.65535, got 70000"):
        Settings().updated({"oscquery_port": 70000})
    with pytest.raises(SettingsError, match=r"mdns must be in 0\.\.1, got 2"):
        Settings().updated({"mdns": 2})


def test_mdns_is_off_on_loopback_and_on_beyond_unless_told():
    assert not mdns.wanted(None, "127.0.0.1") and not mdns.wanted(None, "localhost")
    assert mdns.wanted(None, "0.0.0.0") and mdns.wanted(None, "192.168.1.20")
    assert mdns.wanted(1, "127.0.0.1") and not mdns.wanted(0, "0.0.0.0")
    assert mdns.advertised_addresses("192.168.1.20") == ["192.168.1.20"]


@pytest.mark.parametrize("overrides", [{"mdns": 1}, {"osc_host": "0.0.0.0", "allow": ("127.0.0.1",)},
                                       {"mdns": 1, "oscquery_port": -1}],
                         ids=["loopback-on-request", "network-by-default", "osc-only"])
def test_mdns_advertises_oscquery_and_osc(companion_with, overrides):
    zeroconf = mdns.require()  # fails naming the install line when the package is missing
    companion = companion_with(**overrides)
    assert companion.advertiser is not None and companion.advertiser.registered.wait(WAIT)
    said = "mDNS: advertising _osc._udp" if companion.oscquery is None else "mDNS: advertising _oscjson._tcp and _osc._udp"
    assert said in companion.describe()
    addresses = mdns.advertised_addresses(companion.server.host)
    browser = zeroconf.Zeroconf(interfaces=["127.0.0.1"] if addresses == ["127.0.0.1"] else zeroconf.InterfaceChoice.All)
    try:
        ports = {}
        for kind, name in companion.advertiser.services().items():
            info = browser.get_service_info(kind, name, timeout=int(WAIT * 1000))
            assert info is not None, kind
            ports[kind] = info.port
            assert set(info.parsed_addresses()) == set(addresses)
    finally:
        browser.close()
    expected = {mdns.OSC_TYPE: companion.server.address[1]}
    if companion.oscquery is not None:
        expected[mdns.OSCQUERY_TYPE] = companion.oscquery.address[1]
    assert ports == expected


def test_without_zeroconf_mdns_asked_for_is_an_error_and_otherwise_a_warning(tmp_path, monkeypatch, caplog):
    def missing():
        raise mdns.MdnsUnavailable(f"mDNS advertisement needs the zeroconf package (No module named 'zeroconf'): "
                                   f"{mdns.INSTALL}")

    monkeypatch.setattr(mdns, "require", missing)
    with pytest.raises(ValueError, match=r"needs the zeroconf package.*pip install zeroconf"):
        Companion(Settings(folder=str(tmp_path), mdns=1))
    companion = Companion(Settings(folder=str(tmp_path), osc_host="0.0.0.0", allow=("127.0.0.1",)))
    assert not companion.advertiser_wanted
    assert "the companion is not advertised" in caplog.text


def test_a_failing_snapshot_is_a_500_and_the_server_goes_on(companion_with, caplog):
    companion = companion_with()
    good = companion.oscquery.live

    def broken():
        raise RuntimeError("snapshot exploded")

    companion.oscquery.live = broken
    status, text = get(companion.oscquery.url)
    assert status == 500 and "the log has the details" in text
    assert "snapshot exploded" in caplog.text
    companion.oscquery.live = good
    assert get(companion.oscquery.url + "dd/ping?TYPE") == (200, {"TYPE": "i"})
