"""The OSC address space as an OSCQuery namespace: JSON-ready dicts built from ``osc_protocol.table``.

OSCQuery (Vidvox's proposal, the one TouchDesigner, ossia score, Chataigne and VRChat tools read)
publishes a server's OSC methods over HTTP as a tree of nodes: FULL_PATH, CONTENTS (the children),
TYPE (OSC type tags), DESCRIPTION, ACCESS (0 none, 1 read, 2 write, 3 both), RANGE (one entry per
type tag: MIN/MAX, or VALS for a list of choices, null for none) and VALUE. Every request of the
table is a write-only method; the values a controller may show (``table.STATE``, the pool fill per
category, the settings) are read-only nodes under ``/dd/state`` whose VALUE comes from a
:class:`Live` snapshot the caller supplies. Pure: no sockets, no threads, no companion import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from osc_protocol.table import (
    PARAMS,
    POOL_FILL,
    POOL_PREFIX,
    REQUESTS,
    SETTINGS_PREFIX,
    STATE,
    STATE_PREFIX,
    TYPE_NAMES,
    Arg,
    Request,
)

ACCESS_NONE, ACCESS_READ, ACCESS_WRITE, ACCESS_READ_WRITE = 0, 1, 2, 3
ATTRIBUTES = ("FULL_PATH", "CONTENTS", "TYPE", "DESCRIPTION", "ACCESS", "RANGE", "VALUE")
EXTENSIONS = {
    "ACCESS": True, "VALUE": True, "RANGE": True, "DESCRIPTION": True,
    "TAGS": False, "EXTENDED_TYPE": False, "UNIT": False, "CRITICAL": False, "CLIPMODE": False,
    "LISTEN": False, "PATH_CHANGED": False, "PATH_RENAMED": False, "PATH_ADDED": False, "PATH_REMOVED": False,
}
_CONTAINERS = {
    "/": "the Dance Diffusion companion (docs/OSC.md)",
    "/dd": "requests (write: send them over OSC/UDP) and read-only state",
    "/dd/model": "model loading",
    "/dd/pad": "pads of the pad map",
    "/dd/reply": "where replies go",
    STATE_PREFIX: "read-only values, over HTTP only (VALUE); requests are the other nodes",
    POOL_PREFIX: "pre-rendered samples ready per category of the loaded model",
    SETTINGS_PREFIX: "the engine's settings as /dd/get reads them; change them with /dd/set <name> <value>",
}


@dataclass(frozen=True)
class Live:
    """The cheap live values of a running companion (all optional: an empty snapshot gives no VALUEs)."""

    state: Mapping[str, int | float | str] = field(default_factory=dict)  # names of table.STATE
    categories: tuple[str, ...] = ()  # of the loaded model: the VALS of category arguments
    pool: Mapping[str, int] = field(default_factory=dict)  # category -> ready samples
    pool_size: int | None = None
    settings: Mapping[str, int | float | str] = field(default_factory=dict)  # names of table.PARAMS


class NoSuchNode(KeyError):
    """No node at that path."""


def namespace(live: Live | None = None) -> dict[str, Any]:
    """The root node with the whole tree under it."""
    live = live or Live()
    root = _container("/")
    for request in REQUESTS.values():
        _insert(root, request.address, _method(request, live))
    for name, arg in STATE.items():
        _insert(root, f"{STATE_PREFIX}/{name}", _value_node(f"{STATE_PREFIX}/{name}", arg, live.state.get(name)))
    _insert(root, POOL_PREFIX, _container(POOL_PREFIX))
    for category in live.categories:
        path = f"{POOL_PREFIX}/{category}"
        fill = Arg(category, "i", POOL_FILL.meaning, low=0, high=POOL_FILL.high if live.pool_size is None else live.pool_size)
        _insert(root, path, _value_node(path, fill, live.pool.get(category)))
    for name, arg in PARAMS.items():
        path = f"{SETTINGS_PREFIX}/{name}"
        _insert(root, path, _value_node(path, _setting(arg), live.settings.get(name)))
    return root


def find(tree: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The node at ``path`` ("/" or "/dd/generate"; a trailing slash is ignored); ``NoSuchNode`` if none."""
    node: Any = tree
    for part in [p for p in path.split("/") if p]:
        children = node.get("CONTENTS") or {}
        if part not in children:
            raise NoSuchNode(path)
        node = children[part]
    return node


def attribute(node: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """``{name: value}`` for an attribute query (``GET /dd/generate?TYPE``), None when the node has none;
    ``ValueError`` for a name OSCQuery does not define here."""
    if name not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {name!r}; attributes are: {', '.join(ATTRIBUTES)}, HOST_INFO")
    return {name: node[name]} if name in node else None


def host_info(name: str, osc_ip: str, osc_port: int) -> dict[str, Any]:
    """The answer to ``GET /?HOST_INFO``."""
    return {"NAME": name, "OSC_IP": osc_ip, "OSC_PORT": osc_port, "OSC_TRANSPORT": "UDP", "EXTENSIONS": dict(EXTENSIONS)}


def type_tags(request: Request) -> str:
    """The TYPE of a request's node: one tag per argument, optional ones included."""
    return "".join(a.osc_tag for a in request.args)


# ---------------------------------------------------------------- nodes


def _container(path: str) -> dict[str, Any]:
    return {"FULL_PATH": path, "CONTENTS": {}, "DESCRIPTION": _CONTAINERS.get(path, ""), "ACCESS": ACCESS_NONE}


def _insert(root: dict[str, Any], path: str, node: dict[str, Any]) -> None:
    parent = root
    parts = [p for p in path.split("/") if p]
    for depth, part in enumerate(parts[:-1]):
        children = parent.setdefault("CONTENTS", {})
        if part not in children:
            children[part] = _container("/" + "/".join(parts[: depth + 1]))
        parent = children[part]
    children = parent.setdefault("CONTENTS", {})
    if parts[-1] in children:  # a container made on the way that now gets its own node: keep its children
        node = {**children[parts[-1]], **node}
    children[parts[-1]] = node


def _method(request: Request, live: Live) -> dict[str, Any]:
    node: dict[str, Any] = {
        "FULL_PATH": request.address,
        "TYPE": type_tags(request),
        "DESCRIPTION": _describe(request),
        "ACCESS": ACCESS_WRITE,
    }
    if request.args:
        node["RANGE"] = [_range(a, live) for a in request.args]
    return node


def _value_node(path: str, arg: Arg, value: int | float | str | None) -> dict[str, Any]:
    node: dict[str, Any] = {
        "FULL_PATH": path,
        "TYPE": arg.osc_tag,
        "DESCRIPTION": arg.meaning,
        "ACCESS": ACCESS_READ,
        "RANGE": [_range(arg, Live())],
    }
    if value is not None:
        node["VALUE"] = [value]
    return node


def _setting(arg: Arg) -> Arg:
    return Arg(arg.name, "i" if arg.type == "i" else "f" if arg.type == "f" else "s", arg.meaning,
               low=arg.low, high=arg.high, choices=arg.choices)


def _range(arg: Arg, live: Live) -> dict[str, Any] | None:
    if arg.choices_from == "categories" and live.categories:
        return {"VALS": list(live.categories)}
    if arg.type == "param":
        return {"VALS": list(PARAMS)}
    if arg.choices:
        return {"VALS": list(arg.choices)}
    bounds = {}
    if arg.low is not None:
        bounds["MIN"] = _number(arg.low, arg.type)
    if arg.high is not None:
        bounds["MAX"] = _number(arg.high, arg.type)
    return bounds or None


def _number(x: float, kind: str) -> int | float:
    return int(x) if kind == "i" else float(x)


def _describe(request: Request) -> str:
    args = "; ".join(
        f"{a.name} ({TYPE_NAMES[a.type]}{', optional' if a.optional else ''}): {a.meaning}" for a in request.args
    )
    replies = " or ".join(request.replies) + " (or /dd/error)"
    return f"{request.meaning} Usage: {request.usage}." + (f" Arguments: {args}." if args else "") + f" Replies: {replies}."
