"""Generate docs/OSC.md from the address table: ``python -m osc_protocol.docs`` writes it,
``python -m osc_protocol.docs --check`` fails when it is out of date."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from osc_protocol.client import format_message
from osc_protocol.oscquery import type_tags
from osc_protocol.server import ERROR_BURST, ERROR_RATE, ERRORS_BURST_ALL, ERRORS_RATE_ALL, RECEIVE_BUFFER
from osc_protocol.table import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    ERRORS,
    MAX_SUBSCRIPTIONS,
    PARAMS,
    POOL_FILL,
    POOL_PREFIX,
    REPLIES,
    REQUESTS,
    SETTINGS_PREFIX,
    STATE,
    STATE_PREFIX,
    Arg,
)

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "OSC.md"

_INTRO = f"""\
# OSC protocol

<!-- Generated from osc_protocol/table.py by `python -m osc_protocol.docs`. Do not edit by hand. -->

The companion listens for [OSC](https://opensoundcontrol.stanford.edu/spec-1_0.html) messages over UDP
so that a DAW device (Max for Live, a Bitwig or REAPER script), a patch (Max, Pure Data) or a controller
(TouchOSC, Open Stage Control) can ask it for new sounds.

## Connecting

- **Listen address:** UDP `{DEFAULT_HOST}:{DEFAULT_PORT}` by default; the port is configurable.
  Listening on the network (`0.0.0.0` or a LAN address) must be asked for explicitly and needs an
  allow-list of client addresses or networks (`192.168.1.20`, `192.168.1.0/24`); packets from any other
  source are dropped and logged, without a reply. With an allow-list, loopback clients need `127.0.0.1`
  in it too.
- **Where replies go:** to the address and port the request came from, unless
  1. the sender's host subscribed reply addresses with `/dd/reply/subscribe`: then to those
     (this is what tools that send from a random port need, e.g. `oscsend`, Max's `[udpsend]`); but a
     sender whose own address (host and port) is one of those subscriptions gets its replies alone, so
     several clients on one host that each subscribe the port they send from (the DAW plugin's
     instances) never see each other's replies, or
  2. the companion was started with a reply port: then to that port on the sender's host.
- **Broadcasts:** the progress and results of jobs that did not come from OSC (MIDI pads, the window,
  the command line) go to every subscribed address.
- **Messages, not bundles, are enough** (Pure Data's `[oscformat]` never sends bundles). Bundles, nested
  ones too, are accepted: their messages run at once and in order, **whatever the timetag says**; a
  timetag in the future is not waited for (rendering takes far longer than any scheduling precision
  would matter). The application still sees the timetag, as `Command.timetag`.
- **Address patterns** (`*`, `?`, `[]`, `{{}}`) are not supported: send the exact addresses below.

## Types

Arguments are OSC `i` (int32), `f` (float32) and `s` (string) as listed. Musicians' tools are not
always exact, so the companion is tolerant where it is safe:

- an integer is accepted where a number (`f`) is expected;
- a float with an integral value (`2.0`) is accepted where an integer (`i`) is expected (Max and Pd
  often send floats); `2.5` is not;
- 64-bit ints (`h`), doubles (`d`) and symbols (`S`) count as `i`, `f` and `s`.

Anything else is refused with a `/dd/error` naming the argument, the value and what is allowed, e.g.
`/dd/error -1 out_of_range "/dd/generate: count must be in range 1..64, got 100"`.

## Jobs

Requests that render or load something become **jobs**, numbered from 0. The companion answers
`/dd/queued <job>` at once, may send `/dd/progress <job> <fraction>` while it works, and ends **every**
job with exactly one `/dd/done <job> <path>…` (or `/dd/loaded` for a model) or
`/dd/error <job> <code> <message>`. A request that never became a job is refused with job `-1`.

"""

_OUTRO = f"""\
## Trying it from a shell

```sh
dd-companion send --wait /dd/ping
dd-companion send --wait /dd/generate kick 4 1234     # ints, floats and strings by their look
dd-companion send --wait /dd/generate s:808 1         # s:, i:, f: force a type

# liblo-tools (Debian: apt-get install liblo-tools): oscsend uses a new port every time,
# so subscribe a reply port first and listen there with oscdump
oscdump 9001 &
oscsend localhost {DEFAULT_PORT} /dd/reply/subscribe i 9001
oscsend localhost {DEFAULT_PORT} /dd/generate sii kick 2 -1
```

From Pure Data (vanilla): `[list kick 2 -1(` (a message starting with a symbol needs `list`, or a
`[list]` object before `[oscformat]`) → `[oscformat dd generate]` → `[list prepend send]` →
`[list trim]` → `[netsend -u -b]` (after `[connect localhost {DEFAULT_PORT}(`); Pd sends every number as a
float, which the tolerant typing accepts. Replies: subscribe a port, then `[netreceive -u -b 9001]` →
`[oscparse]`. From Max: `[udpsend 127.0.0.1 {DEFAULT_PORT}]` with the message `/dd/generate kick 2 -1`, and
`[udpreceive 9001]` after subscribing port 9001.

At most {MAX_SUBSCRIPTIONS} reply subscriptions are kept at a time. A ready-made Pd vanilla patch that does
all of this is [examples/dd-companion.pd](examples/dd-companion.pd) (the test suite runs it headless).

## Under load

A misbehaving controller or script cannot drown the companion:

- refusals (malformed datagrams, invalid requests, sources outside the allow-list) are logged at most once
  per source and reason every 5 s, the line saying how many were suppressed since the last one;
- the `/dd/error` of a malformed or invalid datagram goes out at once for a source's first {ERROR_BURST},
  then at most {ERROR_RATE:g} per second per source (host and port) and {ERRORS_RATE_ALL:g} per second in all
  (bursts of {ERRORS_BURST_ALL}): a client that sends one bad packet gets its error at once, a flood is mostly
  left unanswered. Refusals of well-formed requests by the engine (`busy`, `not_found`…) are always answered;
- the server asks the OS for {RECEIVE_BUFFER >> 20} MiB of receive buffer and logs what it granted (Linux caps
  it at `net.core.rmem_max`: `sysctl -w net.core.rmem_max={RECEIVE_BUFFER}` raises the cap).

Measured with `python -m benchmarks.osc_flood` (a `serve` subprocess on loopback, the flood sent from
another process, figures and method in [oscquery.md](oscquery.md#under-a-flood)): 58,000 to 147,000 malformed
datagrams per second drained on the 2-core development machine, shared with other jobs (target: 20,000); with 20,000 garbage
datagrams per second running, 100% of the `/dd/ping` (every 10 ms) and `/dd/generate` (every 100 ms) sent
among them answered; after a burst of 3,000 in 0.1 s, the next request answered in under 2 ms.
"""

_OSCQUERY = """## OSCQuery

The companion also publishes this namespace as [OSCQuery](https://github.com/Vidvox/OSCQueryProposal)
(HTTP + JSON), so controllers that read it (TouchDesigner, ossia score, Chataigne, VRChat-style tools)
find every address with its types and ranges. The JSON is generated from the same table as this page.

- **Where:** HTTP on the OSC host, TCP port = the OSC port + 1 by default (`9001`); `--oscquery-port N`
  (settings key `oscquery_port`; 0 = any free port) changes it, `--no-oscquery` (`-1`) turns it off. The
  allow-list applies as for OSC (others get `403`). `serve` prints the address. (TCP 9001 does not
  clash with a UDP reply port 9001 such as the `oscdump` example below.)
- **What:** `GET /` is the whole tree (FULL_PATH, CONTENTS, TYPE, DESCRIPTION, ACCESS, RANGE, VALUE);
  `GET /dd/generate` is one node; `GET /dd/generate?TYPE` one attribute (`204` when the node has none,
  `400` for an unknown one); an unknown path is `404`; `GET /?HOST_INFO` names the OSC endpoint (NAME,
  OSC_IP, OSC_PORT, OSC_TRANSPORT `UDP`, EXTENSIONS).
- **Requests** are write-only methods (ACCESS 2); TYPE lists every argument, optional ones included, with
  `/dd/set`'s value stated as `f` (ints and integral floats pass; `sampler` takes `s`). RANGE gives MIN/MAX,
  or VALS for choices: the loaded model's categories for `category`, the setting names for `param`.
- **Values** a controller may show are read-only nodes (ACCESS 1) under `{state}`, read over HTTP only
  (`GET {state}/engine?VALUE`); OSC messages to them are `unknown_address`.
- **mDNS:** advertised as `_oscjson._tcp` and `_osc._udp` (zeroconf) when listening beyond loopback, or
  with `--mdns`; off on the loopback-only default (`--no-mdns` / `mdns = 0` turns it off everywhere).

```sh
curl -s http://127.0.0.1:9001/?HOST_INFO
curl -s http://127.0.0.1:9001/dd/generate
curl -s 'http://127.0.0.1:9001{state}/pool/kick?VALUE'
```

Details, controllers and troubleshooting: [oscquery.md](oscquery.md).

| value node | type | allowed | meaning |
|---|---|---|---|
"""


def render() -> str:
    """The whole of docs/OSC.md."""
    out = [_INTRO, "## Requests\n\n| address and arguments | final reply | what it does |\n|---|---|---|\n"]
    for r in REQUESTS.values():
        replies = " or ".join(f"`{a}`" for a in r.replies) + " (or `/dd/error`)"
        out.append(f"| [`{r.usage}`](#{_anchor(r.address)}) | {replies} | {_cell(r.meaning)} |\n")
    for r in REQUESTS.values():
        out.append(f"\n### {r.address}\n\n`{r.usage}`\n\n{r.meaning}\n\n")
        if r.args:
            out.append(_arg_table(r.args))
        interim = ", ".join(f"`{a}`" for a in r.interim)
        final = " or ".join(f"`{REPLIES[a].usage}`" for a in r.replies)
        out.append(f"Replies: {interim + ', then ' if interim else ''}{final}, or `/dd/error`.\n")
        out.append(f"\nExample: `{format_message(r.address, r.example)}`\n")
    out.append("\n## Settings\n\nRead with `/dd/get s:name`, changed with `/dd/set s:name <value>`; both answer "
               "`/dd/param s:name <value>` with the value in effect.\n\n")
    out.append(_arg_table(tuple(PARAMS.values()), defaults=False))
    out.append("## Replies\n\n| address and arguments | meaning |\n|---|---|\n")
    for reply in REPLIES.values():
        details = "".join(f"<br>`{a.name}`: {a.meaning}" + (f" ({a.range_text})" if a.range_text else "")
                          for a in reply.args)
        out.append(f"| `{reply.usage}` | {_cell(reply.meaning + details)} |\n")
    out.append("\n## Error codes\n\nThe second argument of `/dd/error`.\n\n| code | meaning |\n|---|---|\n")
    for code, meaning in ERRORS.items():
        out.append(f"| `{code}` | {_cell(meaning)} |\n")
    out.append("\n" + _OSCQUERY.format(state=STATE_PREFIX))
    for name, arg in STATE.items():
        out.append(f"| `{STATE_PREFIX}/{name}` | `{arg.osc_tag}` | {arg.range_text} | {_cell(arg.meaning)} |\n")
    out.append(f"| `{POOL_PREFIX}/<category>` | `i` | 0..pool_size | {_cell(POOL_FILL.meaning)}, one node per "
               "category of the loaded model |\n")
    out.append(f"| `{SETTINGS_PREFIX}/<setting>` | as the setting | as in Settings | every setting above, "
               "as `/dd/get` reads it |\n")
    out.append("\nThe TYPE of each request node:\n\n| address | TYPE |\n|---|---|\n")
    for r in REQUESTS.values():
        out.append(f"| `{r.address}` | `{type_tags(r) or '(none)'}` |\n")
    out.append("\n" + _OUTRO)
    return "".join(out)


_TYPE_CELLS = {
    "i": "`i` int",
    "f": "`f` float",
    "s": "`s` string",
    "param": "`s` setting name",
    "value": "as the setting",
    "any": "`i`, `f` or `s`",
}


def _arg_table(args: tuple[Arg, ...], defaults: bool = True) -> str:
    """A markdown table of arguments; settings have no default column (the engine owns those)."""
    if not defaults:
        rows = ["| setting | type | allowed | meaning |\n|---|---|---|---|\n"]
        rows += [f"| `{a.name}` | {_TYPE_CELLS[a.type]} | {a.range_text} | {_cell(a.meaning)} |\n" for a in args]
        return "".join(rows) + "\n"
    rows = ["| argument | type | allowed | default | meaning |\n|---|---|---|---|---|\n"]
    for a in args:
        if not a.optional:
            default = "required"
        elif a.default_text:
            default = a.default_text
        else:
            default = "none" if a.default is None else f"`{a.default}`"
        rows.append(f"| `{a.name}` | {_TYPE_CELLS[a.type]} | {a.range_text} | {default} | {_cell(a.meaning)} |\n")
    return "".join(rows) + "\n"


def _anchor(address: str) -> str:
    return address.replace("/", "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    """Write docs/OSC.md, or with ``--check`` report whether it is up to date (exit 1 if not)."""
    parser = argparse.ArgumentParser(prog="python -m osc_protocol.docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only check that the file is up to date")
    parser.add_argument("--output", type=Path, default=DOC_PATH, help=f"where to write (default {DOC_PATH})")
    options = parser.parse_args(argv)
    text = render()
    if options.check:
        current = options.output.read_text(encoding="utf-8") if options.output.exists() else ""
        if current != text:
            print(f"{options.output} is out of date: run python -m osc_protocol.docs", file=sys.stderr)
            return 1
        return 0
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(text, encoding="utf-8")
    print(f"wrote {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
