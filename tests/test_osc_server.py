"""The OSC server and client over real UDP on loopback (ephemeral ports)."""

from __future__ import annotations

import logging
import queue
import random
import socket
import subprocess
import threading
import time

import pytest

import osc_protocol.server as srv_module
from osc_protocol.client import OscClient, send_command
from osc_protocol.codec import RequestError, encode_bundle, encode_message, unix_to_timetag
from osc_protocol.server import OscServer
from tests.conftest import require_tool

WAIT = 2.0  # generous upper bound for a reply on loopback; tests finish far sooner when all is well
SILENCE = 0.3  # how long "no reply" is waited for


class BadConfig(Exception):
    code = "bad_config"


class FakeEngine:
    """Stands in for the engine adapter: records commands, answers from a worker thread like the real one."""

    def __init__(self) -> None:
        self.commands: queue.Queue = queue.Queue()
        self.next_job = 0
        self.workers: list[threading.Thread] = []

    def __call__(self, command, reply) -> None:
        self.commands.put(command)
        if command.name == "status":
            reply.send("/dd/status", "idle", "tiny", "onnx-cpu", 0)
        elif command.name == "generate":
            category = command.args["category"]
            if category == "explode":
                raise RuntimeError("engine exploded")
            if category == "strict":
                raise BadConfig("category strict needs a bigger model")
            if category == "nope":
                raise RequestError("not_found", f"no category {category!r}")
            job, self.next_job = self.next_job, self.next_job + 1
            reply.send("/dd/queued", job)
            worker = threading.Thread(target=self._render, args=(job, command, reply))
            worker.start()
            self.workers.append(worker)

    def _render(self, job, command, reply) -> None:
        for step in range(1, 3):
            reply.progress(job, step / 2)
        reply.done(job, *(f"/samples/{command.args['category']}_{job}_{k}.wav" for k in range(command.args["count"])))


@pytest.fixture
def engine():
    return FakeEngine()


@pytest.fixture
def server(engine):
    srv = OscServer(port=0, handler=engine)
    srv.start()
    yield srv
    srv.stop()
    for worker in engine.workers:
        worker.join(WAIT)


@pytest.fixture
def client(server):
    with OscClient(*server.address, timeout=WAIT) as c:
        yield c


def expect_error(client, address, *args, code):
    reply, values = client.request(address, *args, expect=("/dd/error",))
    assert values[0] == -1 and values[1] == code, values
    return values[2]


def test_ping_pong(client):
    assert client.request("/dd/ping") == ("/dd/pong", ())
    assert client.request("/dd/ping", 42) == ("/dd/pong", (42,))


def test_generate_with_an_engine_replying_from_another_thread(client, engine):
    seen = []
    address, args = client.request("/dd/generate", "kick", 3, 77, on_reply=lambda a, r: seen.append(a))
    assert address == "/dd/done"
    assert args == (0, "/samples/kick_0_0.wav", "/samples/kick_0_1.wav", "/samples/kick_0_2.wav")
    assert seen == ["/dd/queued", "/dd/progress", "/dd/progress", "/dd/done"]
    command = engine.commands.get_nowait()
    assert (command.name, dict(command.args)) == ("generate", {"category": "kick", "count": 3, "seed": 77})
    assert command.source == ("127.0.0.1", client.address[1])


def test_tolerant_float_for_int_over_the_wire(client, engine):
    address, args = client.request("/dd/generate", "snare", 2.0, -1.0)
    assert address == "/dd/done" and len(args) == 3
    command = engine.commands.get_nowait()
    assert command.args["count"] == 2 and type(command.args["count"]) is int
    assert command.args["seed"] == -1


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (("/dd/nothing",), "unknown_address"),
        (("/dd/generate", 36), "bad_type"),
        (("/dd/generate", "kick", 1.5), "bad_type"),
        (("/dd/generate",), "missing_argument"),
        (("/dd/generate", "kick", 1, 2, 3), "too_many_arguments"),
        (("/dd/generate", "kick", 65), "out_of_range"),
        (("/dd/generate", ""), "bad_value"),
        (("/dd/set", "loudness", 3), "unknown_param"),
    ],
)
def test_every_refusal_gets_its_error_code_and_a_log_line(client, engine, caplog, message, code):
    with caplog.at_level(logging.WARNING, logger="dd.osc"):
        text = expect_error(client, *message, code=code)
    assert text
    assert any(r.name == "dd.osc" and code in r.getMessage() for r in caplog.records)
    assert engine.commands.empty()


def test_malformed_datagram_gets_an_error(client, caplog):
    with caplog.at_level(logging.WARNING, logger="dd.osc"):
        client.send_raw(b"\x00garbage")
        address, args = client.wait_for("/dd/error")
    assert args[:2] == (-1, "malformed")
    assert any("malformed" in r.getMessage() for r in caplog.records)


def test_flood_of_garbage_leaves_the_server_answering(server, client, engine, caplog):
    rng = random.Random(7)
    valid = [encode_message("/dd/generate", "kick"), encode_message("/dd/pad/trigger", 36, 100),
             encode_bundle(encode_message("/dd/status"))]
    wrong_types = [
        ("/dd/generate", 1.5), ("/dd/pad/trigger", "x"), ("/dd/cancel", b"blob"), ("/dd/set", 3, 3),
        ("/dd/variation", "/a.wav", "strong"), ("/dd/reply/subscribe", "host", "port"), ("/dd/morph", None, None),
    ]
    errors = 0
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="dd.osc"):
        for i in range(2000):
            kind = i % 3
            if kind == 0:
                data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 80)))
            elif kind == 1:
                data = bytearray(rng.choice(valid))
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
                data = bytes(data[: rng.randrange(1, len(data) + 1)])
            else:
                address, *args = rng.choice(wrong_types)
                data = encode_message(address, *args)
            client.send_raw(data)
            if i % 100 == 99:
                time.sleep(0.005)  # let both sides keep up instead of testing the kernel's buffer sizes
                errors += sum(a == "/dd/error" for a, _ in client.drain())
        client.send("/dd/ping", 99)  # answered after every datagram before it: the server handles them in order
        replies = []
        assert client.wait_for("/dd/pong", on_reply=lambda a, r: replies.append(a)) == ("/dd/pong", (99,))
        errors += replies.count("/dd/error")
        elapsed = time.monotonic() - t0
        # a client that sends one bad packet still gets its error at once
        with OscClient(*server.address, timeout=WAIT) as other:
            other.send_raw(b"\x00garbage")
            assert other.wait_for("/dd/error")[1][:2] == (-1, "malformed")
    # about 1,300 datagrams were refused: only the first few and a trickle got a /dd/error each
    assert srv_module.ERROR_BURST <= errors <= srv_module.ERROR_BURST + srv_module.ERROR_RATE * elapsed + 1, errors
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert 1 <= len(refusals) <= 12, len(refusals)  # one line per reason (a handful of codes), not per packet
    assert server.running
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no dispatcher crash logged
    while not engine.commands.empty():  # only valid commands (mutated bytes that are still valid) got through
        assert engine.commands.get_nowait().name in ("generate", "pad_trigger", "status")


def test_refusal_log_lines_count_what_they_suppressed(server, client, caplog):
    server._log_limit.interval = 0.2
    with caplog.at_level(logging.WARNING, logger="dd.osc"):
        for _ in range(50):
            client.send_raw(b"\x00garbage")
        assert client.request("/dd/ping", 1, expect=("/dd/pong",)) == ("/dd/pong", (1,))
        time.sleep(0.25)
        client.send_raw(b"\x00garbage")
        assert client.request("/dd/ping", 2, expect=("/dd/pong",)) == ("/dd/pong", (2,))
    lines = [r.getMessage() for r in caplog.records if "(malformed)" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "(49 more from 127.0.0.1 since the last report)" in lines[1]  # the first was logged


def test_a_burst_of_garbage_then_valid_requests_are_all_answered(server, client, engine):
    garbage = [b"\x00" + bytes([i % 251]) * (i % 60) for i in range(1500)]
    for data in garbage:  # as fast as one Python sender can: far faster than a controller sends
        client.send_raw(data)
    tokens = list(range(20))
    for token in tokens:
        client.send("/dd/ping", token)
    client.send("/dd/generate", "kick", 2)
    pongs, done = set(), None
    deadline = time.monotonic() + 10 * WAIT
    while (len(pongs) < len(tokens) or done is None) and time.monotonic() < deadline:
        message = client.receive(0.5)
        if message is None:
            continue
        if message[0] == "/dd/pong":
            pongs.add(message[1][0])
        elif message[0] == "/dd/done":
            done = message[1]
    assert pongs == set(tokens)
    assert done is not None and len(done) == 3
    assert server.receive_buffer is not None and server.receive_buffer > 0


def test_nested_bundle_with_a_future_timetag_runs_at_once(client, engine):
    future = unix_to_timetag(time.time() + 10)
    packet = encode_bundle(
        encode_message("/dd/ping", 1),
        encode_bundle(encode_message("/dd/ping", 2), encode_bundle(encode_message("/dd/status"), timetag=future)),
        timetag=future,
    )
    started = time.monotonic()
    client.send_raw(packet)
    replies = [client.wait_for(("/dd/pong", "/dd/status"), timeout=WAIT) for _ in range(3)]
    assert time.monotonic() - started < 1.0
    assert replies == [("/dd/pong", (1,)), ("/dd/pong", (2,)), ("/dd/status", ("idle", "tiny", "onnx-cpu", 0))]
    command = engine.commands.get_nowait()
    assert command.name == "status"
    assert command.timetag == pytest.approx(time.time() + 10, abs=1.0)


def test_subscribe_redirects_replies_and_receives_broadcasts(server, client):
    with OscClient(*server.address, timeout=WAIT) as listener:
        client.send("/dd/reply/subscribe", listener.address[1])
        assert listener.wait_for("/dd/subscribed") == ("/dd/subscribed", ("127.0.0.1", listener.address[1]))
        client.send("/dd/ping", 5)
        assert listener.wait_for("/dd/pong") == ("/dd/pong", (5,))
        client.send("/dd/generate", "hat")
        assert listener.wait_for("/dd/done") == ("/dd/done", (0, "/samples/hat_0_0.wav"))
        assert client.receive(SILENCE) is None  # nothing came back to the sender itself

        server.broadcast("/dd/progress", 9, 0.5)
        assert listener.wait_for("/dd/progress") == ("/dd/progress", (9, 0.5))

        client.send("/dd/reply/unsubscribe")
        assert client.wait_for("/dd/unsubscribed") == ("/dd/unsubscribed", (1,))
        assert client.request("/dd/ping", 6) == ("/dd/pong", (6,))
        assert listener.receive(SILENCE) is None
        assert server.subscribers() == []


def test_a_sender_subscribed_at_its_own_port_gets_its_replies_alone(server, client):
    """Two clients on one host, each subscribed at the port it sends from (the plugin's instances)."""
    with OscClient(*server.address, timeout=WAIT) as other:
        for c in (client, other):
            c.send("/dd/reply/subscribe", c.address[1])
            assert c.wait_for("/dd/subscribed") == ("/dd/subscribed", ("127.0.0.1", c.address[1]))
        client.send("/dd/ping", 7)
        assert client.wait_for("/dd/pong") == ("/dd/pong", (7,))
        assert other.receive(SILENCE) is None  # not broadcast to the host's other subscription
        other.send("/dd/ping", 8)
        assert other.wait_for("/dd/pong") == ("/dd/pong", (8,))
        assert client.receive(SILENCE) is None
        with OscClient(*server.address, timeout=WAIT) as third:  # a sender from an unsubscribed port
            third.send("/dd/ping", 9)
            assert client.wait_for("/dd/pong") == ("/dd/pong", (9,))
            assert other.wait_for("/dd/pong") == ("/dd/pong", (9,))
            assert third.receive(SILENCE) is None


def test_subscribing_a_foreign_host_is_refused(client, server):
    assert "10.1.2.3" in expect_error(client, "/dd/reply/subscribe", "10.1.2.3", 9001, code="not_allowed")
    assert "host must be an IP address" in expect_error(client, "/dd/reply/subscribe", "myhost", 9001, code="bad_value")
    assert server.subscribers() == []


def test_configured_reply_port(engine):
    with OscClient(timeout=WAIT) as listener, OscServer(port=0, handler=engine, reply_port=listener.address[1]) as srv:
        with OscClient(*srv.address, timeout=WAIT) as sender:
            sender.send("/dd/ping", 3)
            assert listener.wait_for("/dd/pong") == ("/dd/pong", (3,))
            assert sender.receive(SILENCE) is None


def test_allow_list_drops_other_sources_with_a_log_line(engine, caplog):
    with caplog.at_level(logging.WARNING, logger="dd.osc"):
        with OscServer(port=0, handler=engine, allow=["10.0.0.0/8"]) as srv, OscClient(*srv.address) as c:
            c.send("/dd/ping")
            c.send("/dd/generate", "kick")
            assert c.receive(SILENCE) is None
            assert srv.running
    assert engine.commands.empty()
    assert any(r.name == "dd.osc" and "127.0.0.1" in r.getMessage() and "allow-list" in r.getMessage()
               for r in caplog.records)
    with OscServer(port=0, handler=engine, allow=["127.0.0.0/8"]) as srv, OscClient(*srv.address, timeout=WAIT) as c:
        assert c.request("/dd/ping") == ("/dd/pong", ())


def test_listening_on_the_network_needs_an_allow_list():
    with pytest.raises(ValueError, match="allow-list"):
        OscServer(host="0.0.0.0", port=0)
    with pytest.raises(ValueError, match="192.168.1.0/24"):
        OscServer(host="0.0.0.0", port=0, allow=["not an address"])
    srv = OscServer(host="0.0.0.0", port=0, allow=["127.0.0.1", "192.168.1.0/24"])
    with srv, OscClient("127.0.0.1", srv.address[1], timeout=WAIT) as c:
        assert c.request("/dd/ping") == ("/dd/pong", ())


def test_handler_exceptions_become_errors_and_the_server_survives(client, server, caplog):
    with caplog.at_level(logging.ERROR, logger="dd.osc"):
        assert "engine exploded" in expect_error(client, "/dd/generate", "explode", code="internal")
    assert any(r.exc_info for r in caplog.records)  # the traceback is logged
    assert "bigger model" in expect_error(client, "/dd/generate", "strict", code="bad_config")
    assert expect_error(client, "/dd/generate", "nope", code="not_found") == "/dd/generate: no category 'nope'"
    assert server.running
    assert client.request("/dd/ping") == ("/dd/pong", ())


def test_without_an_engine_requests_are_unavailable_but_ping_works():
    with OscServer(port=0) as srv, OscClient(*srv.address, timeout=WAIT) as c:
        assert "no engine" in expect_error(c, "/dd/status", code="unavailable")
        assert c.request("/dd/ping") == ("/dd/pong", ())


def test_replies_from_many_threads_all_arrive(server, client):
    replier_box = queue.Queue()
    server.handler = lambda command, reply: replier_box.put(reply)
    client.send("/dd/status")
    reply = replier_box.get(timeout=WAIT)
    threads = [threading.Thread(target=lambda j=j: [reply.progress(j, k / 50) for k in range(50)]) for j in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = [client.wait_for("/dd/progress") for _ in range(200)]
    assert sorted((job, round(fraction * 50)) for _, (job, fraction) in got) == [(j, k) for j in range(4) for k in range(50)]


def test_stop_is_prompt_and_frees_the_port(engine):
    srv = OscServer(port=0, handler=engine)
    srv.start()
    port = srv.address[1]
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < 0.5
    assert not srv.running
    again = OscServer(port=port, handler=engine)
    again.start()  # the port is free again
    again.stop()
    with pytest.raises(OSError, match="cannot listen for OSC"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            OscServer(port=taken.getsockname()[1]).start()


def test_request_filters_other_jobs_and_times_out(server, client):
    def handler(command, reply):
        reply.send("/dd/queued", 5)
        reply.done(4, "/other.wav")  # another job's result must not end this request
        reply.done(5, "/mine.wav")

    server.handler = handler
    assert client.request("/dd/generate", "kick") == ("/dd/done", (5, "/mine.wav"))
    server.handler = lambda command, reply: None
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="/dd/done or /dd/error"):
        client.request("/dd/generate", "kick", timeout=0.2)
    assert time.monotonic() - started < 1.0


def test_send_command(server, capsys):
    port = ["--port", str(server.address[1])]
    assert send_command(["/dd/ping", *port, "--wait"]) == 0
    assert capsys.readouterr().out == "/dd/pong\n"
    assert send_command([*port, "--wait", "/dd/generate", "kick", "2", "--timeout", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "/dd/queued 0" and lines[-1] == "/dd/done 0 /samples/kick_0_0.wav /samples/kick_0_1.wav"
    assert send_command([*port, "--wait", "/dd/generate", "kick", "2.5"]) == 1
    assert "bad_type" in capsys.readouterr().out
    assert send_command([*port, "/dd/ping"]) == 0  # fire and forget
    assert send_command([]) == 2
    assert send_command(["dd/ping"]) == 2
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind(("127.0.0.1", 0))
        assert send_command(["--port", str(mute.getsockname()[1]), "--wait", "--timeout", "0.2", "/dd/ping"]) == 3
    assert "no /dd/pong" in capsys.readouterr().err


def test_oscsend_from_liblo(server, engine):
    require_tool("oscsend", "liblo-tools")
    with OscClient(*server.address, timeout=WAIT) as listener:
        port = str(server.address[1])

        def oscsend(*words):
            subprocess.run(["oscsend", "127.0.0.1", port, *words], check=True, timeout=10)

        oscsend("/dd/reply/subscribe", "i", str(listener.address[1]))  # oscsend uses a new port every time
        assert listener.wait_for("/dd/subscribed")[1][1] == listener.address[1]
        oscsend("/dd/generate", "sfi", "tom", "2.0", "5")
        assert listener.wait_for("/dd/done")[1][1:] == ("/samples/tom_0_0.wav", "/samples/tom_0_1.wav")
        assert dict(engine.commands.get_nowait().args) == {"category": "tom", "count": 2, "seed": 5}
        oscsend("/dd/pad/trigger", "d", "3.5")
        assert listener.wait_for("/dd/error")[1][:2] == (-1, "bad_type")


def test_oscdump_reads_what_we_send():
    require_tool("oscdump", "liblo-tools")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dump = subprocess.Popen(["oscdump", "-L", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        with OscClient("127.0.0.1", port) as c:
            lines: queue.Queue = queue.Queue()
            threading.Thread(target=lambda: [lines.put(x) for x in dump.stdout], daemon=True).start()
            deadline = time.monotonic() + 5
            line = None
            while line is None and time.monotonic() < deadline:  # oscdump needs a moment to bind
                c.send("/dd/done", 3, "a b.wav", 0.5, -(2**40))
                try:
                    line = lines.get(timeout=0.2)
                except queue.Empty:
                    pass
        assert line is not None and line.split(" ", 1)[1].strip() == '/dd/done isfh 3 "a b.wav" 0.500000 -1099511627776'
    finally:
        dump.terminate()
        dump.wait(5)
