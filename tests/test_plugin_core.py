"""The plugin's real-time core (voices, stock, choke, lock-free queues, state codec) as a native unit test,
built with AddressSanitizer and UndefinedBehaviorSanitizer (``make -C plugin core-test``) and run here."""

from __future__ import annotations

import subprocess

from tests.plugin_host import PLUGIN_DIR


def test_the_core_passes_its_native_test_under_asan_and_ubsan():
    done = subprocess.run(["make", "-C", str(PLUGIN_DIR), "-s", "core-test"], capture_output=True, text=True,
                          timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "core_test: all checks passed" in output
    assert "runtime error" not in output and "AddressSanitizer" not in output
