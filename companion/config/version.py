"""The companion's version: one place, read by the package metadata (pyproject.toml), ``--version``
and the window's title."""

VERSION = "0.2.0"
