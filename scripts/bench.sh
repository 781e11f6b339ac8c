#!/usr/bin/env bash
# Measures glacierfs against the targets of DESIGN.md §4 and prints a table of medians.
#
#   scripts/bench.sh [--runs N]
#
# Measurements:
#   - staged write of 1 GiB (`dd bs=1M`) and cached read of it back, against a native
#     directory and an `rclone mount --vfs-cache-mode full` of a local directory, same disk;
#   - import of a generated 1,000,000-archive JSON inventory: wall time and peak RSS;
#   - `ls -l` of a vault directory of 100,000 archives, against a native directory of
#     100,000 files on the same disk;
#   - CPU seconds per GiB uploaded through the upload engine and the SDK to the test emulator,
#     against the SDK's own hashing.
# The mount talks to moto (started here, in the same virtualenv scripts/test.sh uses); the
# listing never reaches it, since browsing is answered from the catalog.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
runs=5
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    *) echo "usage: scripts/bench.sh [--runs N]" >&2; exit 2 ;;
  esac
done

if ! command -v rclone >/dev/null || ! command -v fusermount3 >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing rclone and fuse3 to compare against..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone fuse3 >/dev/null
  fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/glacierfs-bench.XXXXXX")
moto_pid=""
cleanup() {
  for m in "$work/mnt" "$work/rclone-mnt"; do
    if mountpoint -q "$m" 2>/dev/null; then umount "$m" || umount -l "$m" || true; fi
  done
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "building the release binary..."
cargo build --release --quiet
bin="$root/target/release/glacierfs"

# Runs a command; prints "seconds peak_rss_MiB".
measure() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
start = time.monotonic()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
elapsed = time.monotonic() - start
if done.returncode != 0:
    sys.exit(f"command failed ({done.returncode}): {' '.join(sys.argv[1:])}")
print(f"{elapsed:.4f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.1f}")
PY
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "generating inventories..."
python3 scripts/gen_inventory.py 1000000 "$work/inv-1m.json"
python3 scripts/gen_inventory.py 100000 "$work/inv-100k.json" --flat

echo "import of 1,000,000 archives ($runs runs)..."
: >"$work/import.txt"
for _ in $(seq "$runs"); do
  rm -rf "$work/cache-import"
  measure "$bin" inventory import --cache-dir "$work/cache-import" bench "$work/inv-1m.json" >>"$work/import.txt"
done
import_s=$(cut -d' ' -f1 "$work/import.txt" | median)
import_rss=$(cut -d' ' -f2 "$work/import.txt" | median)

echo "preparing a vault of 100,000 archives and a native directory of 100,000 files..."
"$bin" inventory import --cache-dir "$work/cache-ls" bench "$work/inv-100k.json" >/dev/null
mkdir -p "$work/native" "$work/mnt"
python3 - "$work/native" <<'PY'
import os, sys
for i in range(100000):
    with open(os.path.join(sys.argv[1], f"file-{i:07d}.dat"), "wb") as f:
        f.truncate(1 + i % 100000)
PY

venv="$root/target/moto-venv"
if [ ! -x "$venv/bin/moto_server" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]'
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
for _ in $(seq 1 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
  sleep 0.1
done
"$venv/bin/python" -c "
import boto3
boto3.client('glacier', endpoint_url='http://127.0.0.1:$port', region_name='us-east-1').create_vault(vaultName='bench')"
"$bin" mount --endpoint-url "http://127.0.0.1:$port" --cache-dir "$work/cache-ls" --write-back-delay 1h -q "$work/mnt"

dd_runs() {
  local dir=$1 out_w=$2 out_r=$3
  : >"$out_w"
  : >"$out_r"
  for _ in $(seq "$runs"); do
    rm -f "$dir/dd.bin"
    measure dd if=/dev/zero of="$dir/dd.bin" bs=1M count=1024 status=none >>"$out_w"
    measure dd if="$dir/dd.bin" of=/dev/null bs=1M status=none >>"$out_r"
  done
  rm -f "$dir/dd.bin"
}
mbps() { awk -v s="$1" 'BEGIN { if (s > 0) printf "%.0f", 1024 / s * 1.048576; else print "-" }'; }

echo "staged write and cached read of 1 GiB ($runs runs each)..."
mkdir -p "$work/dd-native" "$work/dd-rclone-src" "$work/rclone-mnt"
dd_runs "$work/dd-native" "$work/w-native.txt" "$work/r-native.txt"
dd_runs "$work/mnt/bench" "$work/w-glacierfs.txt" "$work/r-glacierfs.txt"
rclone_w="-" rclone_r="-"
if command -v rclone >/dev/null; then
  rclone mount "$work/dd-rclone-src" "$work/rclone-mnt" --vfs-cache-mode full \
    --cache-dir "$work/rclone-cache" --daemon >/dev/null 2>&1 || true
  for _ in $(seq 1 50); do mountpoint -q "$work/rclone-mnt" && break; sleep 0.1; done
  if mountpoint -q "$work/rclone-mnt"; then
    dd_runs "$work/rclone-mnt" "$work/w-rclone.txt" "$work/r-rclone.txt"
    rclone_w=$(cut -d' ' -f1 "$work/w-rclone.txt" | median)
    rclone_r=$(cut -d' ' -f1 "$work/r-rclone.txt" | median)
    umount "$work/rclone-mnt" || umount -l "$work/rclone-mnt" || true
  fi
fi
w_native=$(cut -d' ' -f1 "$work/w-native.txt" | median)
r_native=$(cut -d' ' -f1 "$work/r-native.txt" | median)
w_glacierfs=$(cut -d' ' -f1 "$work/w-glacierfs.txt" | median)
r_glacierfs=$(cut -d' ' -f1 "$work/r-glacierfs.txt" | median)

echo "CPU per GiB uploaded through the SDK to the emulator..."
upload_cpu=$(cargo test --release --quiet --test upload_engine cpu_cost_of_an_upload_through_the_sdk \
  -- --nocapture 2>&1 | grep -o 'cpu:.*' || echo "cpu: measurement failed")

ls_runs() {
  local dir=$1 out=$2
  ls -l "$dir" >/dev/null  # warm caches on both sides alike
  : >"$out"
  for _ in $(seq "$runs"); do measure ls -l "$dir" >>"$out"; done
}
echo "ls -l of 100,000 entries ($runs runs each)..."
ls_runs "$work/native" "$work/ls-native.txt"
ls_runs "$work/mnt/bench" "$work/ls-glacierfs.txt"
ls_native=$(cut -d' ' -f1 "$work/ls-native.txt" | median)
ls_glacierfs=$(cut -d' ' -f1 "$work/ls-glacierfs.txt" | median)
entries=$(ls "$work/mnt/bench" | wc -l)

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
echo
echo "machine: $(nproc) cores ($cpu), $(free -g | awk '/Mem:/ { print $2 }') GiB"
printf '%-44s %12s %12s %12s %10s %s\n' "measurement" "native" "rclone" "glacierfs" "ratio" "target"
printf '%-44s %9s MB/s %9s MB/s %9s MB/s %10s %s\n' "dd 1 GiB into a vault (staged write)" \
  "$(mbps "$w_native")" "$(mbps "$rclone_w")" "$(mbps "$w_glacierfs")" \
  "$(awk -v a="$w_native" -v b="$w_glacierfs" 'BEGIN { printf "%.2fx", a / b }')" ">= 0.9x native"
printf '%-44s %9s MB/s %9s MB/s %9s MB/s %10s %s\n' "dd 1 GiB out of a cached file" \
  "$(mbps "$r_native")" "$(mbps "$rclone_r")" "$(mbps "$r_glacierfs")" \
  "$(awk -v a="$r_native" -v b="$r_glacierfs" 'BEGIN { printf "%.2fx", a / b }')" ">= 0.9x native"
printf '%-44s %12s %12s %11ss %10s %s\n' "import 1,000,000-archive inventory (time)" "-" "-" "$import_s" "-" "<= 5 s"
printf '%-44s %12s %12s %9s MiB %10s %s\n' "import 1,000,000-archive inventory (peak RSS)" "-" "-" "$import_rss" "-" "<= 150 MB"
printf '%-44s %11ss %12s %11ss %10s %s\n' "ls -l of $entries archives" "$ls_native" "-" "$ls_glacierfs" \
  "$(awk -v a="$ls_glacierfs" -v b="$ls_native" 'BEGIN { printf "%.2fx", a / b }')" "<= 1.3x native"
echo "upload engine: $upload_cpu (target: <= 1.1x the SDK's own hashing)"
