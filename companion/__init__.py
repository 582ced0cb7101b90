"""The resident end of the bridge: everything that runs around the loaded model.

Sub-packages, from the bottom up (each may import the ones above it in this list, never one below):

- ``config``: the settings table and file, the pad map and the pad-to-category table;
- ``output``: the watched folder and the WAV format with its metadata;
- ``engine``: requests, jobs, the worker that owns the model, the pre-render pool, model loading;
- ``live``: MIDI input, the mixer, the audio output and its process, the pad rack;
- ``service``: the resident companion put together from settings, and its OSC bridge;
- ``cli``: the ``dd-companion`` command line, one module per command.

companion may import ``models``, ``export`` and ``osc_protocol``; only ``cli`` imports ``gui`` (the
``gui`` command, lazily); nothing here imports PySide6. ``tests/test_layering.py`` checks all of it.
"""
