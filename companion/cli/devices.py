"""``dd-companion devices``: the MIDI inputs and audio outputs the companion can use now."""

from __future__ import annotations

import argparse

from companion.live.audio_device import AudioDeviceError, output_devices
from companion.live.midi_in import VIRTUAL_NAME, MidiPortError, input_names


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list MIDI inputs and audio outputs (names for serve --midi / --audio)",
                       description="List the MIDI input ports and audio output devices seen now. "
                       "serve --midi and --audio match these names by prefix.")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print("MIDI inputs:")
    try:
        names = input_names()
        for name in names:
            print(f"  {name}")
        if not names:
            print("  (none)")
        print(f"  (without --midi, serve creates a virtual input '{VIRTUAL_NAME}' where the platform allows)")
    except MidiPortError as exc:
        print(f"  unavailable: {exc}")
    print("audio outputs:")
    try:
        for device in output_devices():
            print(f"  {device.label()}")
    except AudioDeviceError as exc:
        print(f"  unavailable: {exc}")
    return 0
