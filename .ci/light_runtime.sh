#!/usr/bin/env bash
# The light runtime: `pip install .` (NumPy + ONNX Runtime, no torch) must generate and serve with the
# shipped model's ONNX export. Called by `make test`; VENV is the torch-free environment to use.
set -euo pipefail
VENV=$(cd "${1:?usage: light_runtime.sh VENV}" && pwd)
BIN="$VENV/bin"
serve_pid=""
if "$BIN/python" -c "import torch" 2>/dev/null; then
    echo "light runtime check: torch is importable in $VENV; this check needs an environment without it" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
cd "$work"
"$BIN/dd-companion" generate --category kick --count 2 --seed 7 --steps 6 --out "$work/gen"
test "$(find "$work/gen" -name '*.wav' | wc -l)" -eq 2
"$BIN/dd-companion" serve --folder "$work/served" --osc-port 9177 --pool-size 0 --steps 4 \
    > "$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 60); do grep -q "ready" "$work/serve.log" && break; sleep 1; done
"$BIN/dd-companion" send --port 9177 --wait --timeout 120 /dd/generate snare 1 | tee "$work/reply.txt"
grep -q "/dd/done" "$work/reply.txt"
"$BIN/python" -c "import json, urllib.request as u; info = json.load(u.urlopen('http://127.0.0.1:9178/?HOST_INFO', timeout=10)); assert info['OSC_PORT'] == 9177, info; print('OSCQuery:', info['NAME'], info['OSC_PORT'])"
kill -TERM "$serve_pid"
wait "$serve_pid"
test "$(find "$work/served" -name '*.wav' | wc -l)" -ge 1
echo "light runtime (no torch): generate and serve work"
