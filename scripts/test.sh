#!/usr/bin/env bash
# Runs every test of the workspace: glacierfs's unit tests, the emulator-backed FUSE tests, the
# end-to-end tests against moto, and the Glacier emulator's own tests (emulator/). Installs what
# the tests need first (Debian packages, a virtualenv with moto), and stops moto afterwards
# whether the tests pass or fail.
#
#   scripts/test.sh                 # everything, in the quick (bounded) mode
#   scripts/test.sh --long          # more crash trials, fault rounds and fuzz cases, a 30 min soak
#   scripts/test.sh --test browse   # extra arguments go to `cargo test`
set -euo pipefail
if [ "${1:-}" = "--long" ]; then
  shift
  # The figures RELIABILITY.md reports: at least 50 crash trials, 1,000 faulty calls.
  export GLACIERFS_CRASH_TRIALS=${GLACIERFS_CRASH_TRIALS:-50}
  export GLACIERFS_FAULT_ROUNDS=${GLACIERFS_FAULT_ROUNDS:-15}
  export GLACIERFS_FUZZ_CASES=${GLACIERFS_FUZZ_CASES:-20000}
  export GLACIERFS_MODEL_CASES=${GLACIERFS_MODEL_CASES:-100}
  # The soak (tests/soak.rs): half an hour of mixed work under 10% faults, sampled each minute.
  export GLACIERFS_SOAK_SECS=${GLACIERFS_SOAK_SECS:-1800}
fi
cd "$(dirname "$0")/.."
root=$(pwd)
mkdir -p target

# Debian tools the mounted tests drive, as a user would.
missing=()
command -v rsync >/dev/null || missing+=(rsync)
command -v getfattr >/dev/null || missing+=(attr)
command -v mount.fuse3 >/dev/null || [ -x /sbin/mount.fuse3 ] || missing+=(fuse3)
command -v man >/dev/null || missing+=(man-db)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v gio >/dev/null || missing+=(libglib2.0-bin)
command -v file >/dev/null || missing+=(file)
if ((${#missing[@]})); then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "test.sh: please install: ${missing[*]}" >&2
    exit 1
  fi
fi

# moto, the independent Glacier implementation, in a virtualenv of our own.
venv="$root/target/moto-venv"
if [ ! -x "$venv/bin/moto_server" ]; then
  echo "test.sh: creating $venv with moto[server]"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]'
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$root/target/moto.log" 2>&1 &
moto_pid=$!
cleanup() {
  kill "$moto_pid" 2>/dev/null || true
  wait "$moto_pid" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
export GLACIERFS_MOTO_ENDPOINT="http://127.0.0.1:$port"

# One profile only: the mounted tests run the release binary this same build produces. The
# whole workspace, so the emulator's own tests run too (`--test NAME` finds NAME in any member).
cargo test --release --workspace "$@"
