#!/usr/bin/env bash
# The transfer benchmark in one command: builds migd, migctl, tcp_ceiling,
# grpc_ceiling, device_pipe and evacuate optimized (bazel build -c opt), copies
# them aside (a rebuild during the run cannot swap them), and runs bench.py with
# them. Arguments go to bench.py:
#
#   e2e/bench/run.sh --quick                  # smoke run: 64 MiB, once
#   e2e/bench/run.sh                          # 64 MiB .. 4 GiB, 3 runs each
#   e2e/bench/run.sh --sizes=1GiB --reps=5 --json-out=/tmp/bench.jsonl
#   e2e/bench/run.sh --transport=mtls         # mutual TLS only (default: plain,mtls)
#
# See e2e/bench/README.md.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
if ! command -v python3 >/dev/null 2>&1; then
  echo "bench: python3 is needed" >&2
  exit 2
fi

targets=(//migd:migd //cli:migctl //e2e/bench:tcp_ceiling
  //e2e/bench:grpc_ceiling //e2e/bench:device_pipe //e2e/bench:evacuate)
bazel build -c opt "${targets[@]}"
bin="$(bazel info -c opt bazel-bin 2>/dev/null)"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/migd-bench-bin.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
cp "$bin/migd/migd" "$bin/cli/migctl" "$bin/e2e/bench/tcp_ceiling" \
  "$bin/e2e/bench/grpc_ceiling" "$bin/e2e/bench/device_pipe" \
  "$bin/e2e/bench/evacuate" "$tmp/"

python3 e2e/bench/bench.py --migd="$tmp/migd" --migctl="$tmp/migctl" \
  --tcp-ceiling="$tmp/tcp_ceiling" --grpc-ceiling="$tmp/grpc_ceiling" \
  --device-pipe="$tmp/device_pipe" --evacuate-driver="$tmp/evacuate" "$@"
