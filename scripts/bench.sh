#!/usr/bin/env bash
# Measures glacierfs against the performance targets in the README, side by side with a native
# directory and an `rclone mount --vfs-cache-mode full` of a local directory, all on the disk
# that holds the work directory. Prints a table of medians with each figure's ratio to native,
# and writes the same figures, every sample and a description of the machine as JSON.
#
#   scripts/bench.sh [--runs N] [--json FILE] [--quick] [--dir DIR] [--only GROUPS] [--scale]
#                    [--baseline BIN]
#
#   --runs N     repetitions of each measurement (default 5; the table shows medians)
#   --json FILE  where the JSON goes (default target/bench/bench.json)
#   --quick      smaller sizes and 1 repetition unless --runs says otherwise: a smoke test
#   --dir DIR    where to make the work directory (default $TMPDIR or /tmp); it is removed
#                at the end, mounts included
#   --only GROUPS  only these groups of rows, comma-separated: import (import and mount-ready),
#                mounts (dd, fio, ls -l, find), smallfiles, unpriv, treehash, upload, latency;
#                the rest show "—"
#   --scale      also the scale rows: inventories of 100,000, 1,000,000 and 10,000,000
#                archives [10,000, 100,000, 1,000,000], each directory 100,000 [10,000]
#                archives: import time, time per archive and peak RSS, mount-ready time, and
#                `ls -l` of one such directory; each size imported once (they take minutes)
#   --baseline BIN  also import each inventory with BIN (another build of glacierfs), taking
#                turns with this build in each repetition, so that the two meet the same load;
#                the import rows then show both, and their ratio; smallfiles mounts BIN
#                beside this build and copies into both in turns in each repetition
#
# Measurements (sizes in quick mode in brackets):
#   - staged write of 1 GiB [128 MiB] with `dd bs=1M` and with fio (sequential, psync, 1 MiB);
#     the dd figure includes close, since close is when a staged file is complete;
#   - cached read of the same file with `dd bs=1M` (a staged file's data is local, like a
#     retrieved one's, and is served the same way: through passthrough when it is on);
#   - `ls -l` and `find` over a directory of 100,000 [10,000] archives (rclone: files);
#   - `cp -r` and `rsync -a` of /usr/share/doc (thousands of small files) into each target;
#   - tree hash of 1 GiB [256 MiB] by `glacierfs treehash`, against `openssl dgst -sha256`;
#   - import of a generated 1,000,000-archive [100,000] JSON inventory: time and peak RSS;
#   - time until `glacierfs mount` returns (ready) on a catalog of the same 1,000,000
#     entries, and the daemon's RSS once it is idle;
#   - CPU seconds per GiB uploaded through the upload engine and the SDK to the test emulator
#     (the `cpu_cost_of_an_upload_through_the_sdk` test), against the SDK's own hashing (two
#     SHA-256 passes over the data) and beside the bare SDK sending the same parts;
#   - the write and read again on a mount without FUSE passthrough, as an unprivileged user
#     gets: the daemon runs in a user namespace, where the kernel refuses it the
#     CAP_SYS_ADMIN that passthrough needs (`--no-passthrough` gives the same path as root;
#     the namespace shows what an unprivileged user really gets);
#   - throughput over a distant endpoint: the project's emulator with its link model (50 ms
#     per request, 20 MB/s per connection, both set below) serves an upload of 1 GiB [128 MiB]
#     (`sync --wait`), the retrieval of it into a second mount's cache (`retrieve --wait`) and
#     its export to an S3 bucket, each at the mount's default concurrency. Each is timed
#     beside the same operation on a 1 MiB file, whose time (the job's poll, the requests
#     around the data) is taken off, so the rate is the data's. Beside them, the single-
#     connection figure: one request carrying 64 MiB [16 MiB] over one connection (boto3).
# Where a tool cannot do something (rclone has no tree hash or inventory), the table shows "—".
#
# The mounts talk to moto (started here, in the virtualenv scripts/test.sh uses); none of the
# measurements reaches it, since browsing is answered from the catalog and uploads wait for
# --write-back-delay. Nothing here decides pass or fail on timing: the verdict column is
# information, and the script succeeds whenever every measurement ran.
set -euo pipefail
start_dir=$(pwd)
cd "$(dirname "$0")/.."
root=$(pwd)
self="$root/scripts/bench.sh"

usage() { sed -n '7,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# Runs a command; prints "wall_seconds peak_rss_MiB". Its output is discarded. With MEASURE_CPU
# set to a file, the command's CPU seconds (user and system) are written there too: on a shared
# machine they swing far less with the other work than the wall time does.
measure() {
  python3 - "$@" <<'PY'
import os, resource, subprocess, sys, time
start = time.monotonic()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
elapsed = time.monotonic() - start
if done.returncode != 0:
    sys.exit(f"command failed ({done.returncode}): {' '.join(sys.argv[1:])}")
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
if os.environ.get("MEASURE_CPU"):
    with open(os.environ["MEASURE_CPU"], "w") as f:
        f.write(f"{usage.ru_utime + usage.ru_stime:.2f}\n")
print(f"{elapsed:.4f} {usage.ru_maxrss / 1024:.1f}")
PY
}

# Appends one sample to results/<key>/<target>.
record() { mkdir -p "$work/res/$1"; echo "$3" >>"$work/res/$1/$2"; }

# MB/s (decimal, as dd and the design table count) for $1 MiB in $2 seconds.
mbps() { awk -v m="$1" -v s="$2" 'BEGIN { printf "%.1f", m * 1.048576 / s }'; }

# One staged write and cached read with dd into directory $1; the samples go to target $2 of
# keys $3 (write) and $4 (read). The write starts with no dirty pages left from the last one.
# Callers take turns between targets in each repetition, so that whatever else the disk and
# the machine are doing weighs on every target alike.
dd_once() {
  local dir=$1 target=$2 wkey=$3 rkey=$4 secs
  rm -f "$dir/dd.bin"
  sync
  secs=$(measure dd if=/dev/zero of="$dir/dd.bin" bs=1M count="$dd_mib" status=none | cut -d' ' -f1)
  record "$wkey" "$target" "$(mbps "$dd_mib" "$secs")"
  secs=$(measure dd if="$dir/dd.bin" of=/dev/null bs=1M status=none | cut -d' ' -f1)
  record "$rkey" "$target" "$(mbps "$dd_mib" "$secs")"
  rm -f "$dir/dd.bin"
}

# The unprivileged part, run inside `unshare --user --map-root-user --mount`: the mount exists
# only in this namespace, so it is made, measured and unmounted here.
if [ "${1:-}" = "--unprivileged-inner" ]; then
  work=$2 runs=$3 dd_mib=$4 endpoint=$5 bin=$6
  mkdir -p "$work/mnt-unpriv"
  "$bin" mount --endpoint-url "$endpoint" --cache-dir "$work/cache-unpriv" \
    --write-back-delay 1h "$work/mnt-unpriv" 2>>"$work/unpriv.log"
  trap 'umount "$work/mnt-unpriv" || umount -l "$work/mnt-unpriv" || true' EXIT
  for _ in $(seq "$runs"); do
    dd_once "$work/native-dd" native write_dd_unpriv read_dd_unpriv
    dd_once "$work/mnt-unpriv/bench" glacierfs write_dd_unpriv read_dd_unpriv
  done
  exit 0
fi

runs=5 runs_given=0 quick=0 json="$root/target/bench/bench.json" parent=${TMPDIR:-/tmp}
groups="import,mounts,smallfiles,unpriv,treehash,upload,latency" only="" scale=0 baseline=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) [ $# -ge 2 ] || usage; runs=$2; runs_given=1; shift 2 ;;
    --json) [ $# -ge 2 ] || usage; json=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --dir) [ $# -ge 2 ] || usage; parent=$(cd "$start_dir" && cd "$2" && pwd); shift 2 ;;
    --only) [ $# -ge 2 ] || usage; only=$2; shift 2 ;;
    --scale) scale=1; shift ;;
    --baseline) [ $# -ge 2 ] || usage; baseline=$(cd "$start_dir" && realpath "$2"); shift 2 ;;
    -h | --help) usage ;;
    *) echo "bench.sh: unknown argument $1" >&2; usage ;;
  esac
done
case "$runs" in '' | *[!0-9]* | 0) echo "bench.sh: --runs takes a positive number" >&2; exit 2 ;; esac
for g in ${only//,/ }; do
  case ",$groups," in *",$g,"*) ;; *) echo "bench.sh: --only takes groups among $groups, not $g" >&2; exit 2 ;; esac
done
# Whether group $1 is measured in this run.
want() { [ -z "$only" ] || case ",$only," in *",$1,"*) true ;; *) false ;; esac; }
root_mode="not measured" unpriv_mode="not measured"
if [ "$quick" = 1 ]; then
  [ "$runs_given" = 1 ] || runs=1
  dd_mib=128 ls_count=10000 inv_count=100000 th_mib=256 scale_counts="10000 100000 1000000"
else
  dd_mib=1024 ls_count=100000 inv_count=1000000 th_mib=1024 scale_counts="100000 1000000 10000000"
fi
scale_dir=${scale_counts%% *}
case "$json" in /*) ;; *) json="$start_dir/$json" ;; esac
mkdir -p "$(dirname "$json")"

missing=()
command -v rclone >/dev/null || missing+=(rclone)
command -v fusermount3 >/dev/null || missing+=(fuse3)
command -v fio >/dev/null || missing+=(fio)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} to compare against..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
      echo "bench.sh: could not install ${missing[*]}; those columns will show —" >&2
  else
    echo "bench.sh: ${missing[*]} missing and cannot be installed here; those columns will show —" >&2
  fi
fi

work=$(mktemp -d "$parent/glacierfs-bench.XXXXXX")
moto_pid="" emu_pid=""
cleanup() {
  for m in "$work"/mnt "$work"/mnt-ready "$work"/mnt-scale "$work"/mnt-small "$work"/mnt-small-base "$work"/mnt-lat-* "$work"/rclone-*; do
    if mountpoint -q "$m" 2>/dev/null; then umount "$m" || umount -l "$m" || true; fi
  done
  if [ -n "$moto_pid" ]; then kill "$moto_pid" 2>/dev/null || true; fi
  if [ -n "$emu_pid" ]; then kill "$emu_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

echo "building the release binaries..."
cargo build --release --quiet --workspace
target_dir=${CARGO_TARGET_DIR:-$root/target}
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
bin="$target_dir/release/glacierfs"
emulator_bin="$target_dir/release/glacier-emulator"

# --- moto -------------------------------------------------------------------------------------
venv="$root/target/moto-venv"
if [ ! -x "$venv/bin/moto_server" ]; then
  echo "creating $venv with moto[server]..."
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]'
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
endpoint="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
for _ in $(seq 1 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
  sleep 0.1
done
"$venv/bin/python" -c "
import boto3
boto3.client('glacier', endpoint_url='$endpoint', region_name='us-east-1').create_vault(vaultName='bench')"

# Mounts glacierfs on $2 with the catalog in $1; uploads wait an hour, so none runs meanwhile.
mount_glacierfs() {
  mkdir -p "$2"
  "$bin" mount --endpoint-url "$endpoint" --cache-dir "$1" --write-back-delay 1h "$2"
}

# Mounts rclone over local directory $1 on $2, with its cache in $3; fails if it never appears.
mount_rclone() {
  mkdir -p "$2"
  rclone mount "$1" "$2" --vfs-cache-mode full --cache-dir "$3" --daemon >/dev/null 2>&1 || return 1
  for _ in $(seq 1 100); do mountpoint -q "$2" && return 0; sleep 0.1; done
  return 1
}

# Whether process $1 is still there (a zombie waiting for its reaper counts as gone).
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# "on" or "off (why)", from what a mount logged.
passthrough_mode() {
  local why
  why=$(grep -ho 'FUSE passthrough is off (.*); file data' "$@" 2>/dev/null | head -1 |
    sed 's/^FUSE passthrough is off (//; s/); file data$//')
  if [ -n "$why" ]; then echo "off ($why)"; else echo "on"; fi
}

# --- inventory import and mount-ready ----------------------------------------------------------
if want import; then
echo "generating an inventory of $inv_count archives..."
python3 scripts/gen_inventory.py "$inv_count" "$work/inv-big.json"

echo "import of $inv_count archives ($runs runs)..."
for _ in $(seq "$runs"); do
  rm -rf "$work/cache-big"
  m=$(export MEASURE_CPU="$work/cpu"; measure "$bin" inventory import --cache-dir "$work/cache-big" bench "$work/inv-big.json")
  record import_time glacierfs "${m% *}"
  record import_rss glacierfs "${m#* }"
  record import_cpu glacierfs "$(cat "$work/cpu")"
  if [ -n "$baseline" ]; then
    rm -rf "$work/cache-baseline"
    m=$(export MEASURE_CPU="$work/cpu"; measure "$baseline" inventory import --cache-dir "$work/cache-baseline" bench "$work/inv-big.json")
    record import_time baseline "${m% *}"
    record import_rss baseline "${m#* }"
    record import_cpu baseline "$(cat "$work/cpu")"
    rm -rf "$work/cache-baseline"
  fi
done

echo "mount ready with $inv_count catalog entries, and idle RSS ($runs runs)..."
mkdir -p "$work/mnt-ready"
for _ in $(seq "$runs"); do
  sync
  secs=$(measure "$bin" mount --endpoint-url "$endpoint" --cache-dir "$work/cache-big" \
    --write-back-delay 1h "$work/mnt-ready" | cut -d' ' -f1)
  record mount_ready glacierfs "$secs"
  pid=$("$bin" status --cache-dir "$work/cache-big" --json | python3 -c 'import json, sys; print(json.load(sys.stdin).get("Pid") or "")')
  # Idle: after the start-up work (catalog checks, the first listing of vaults) has settled.
  sleep 3
  if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
    record idle_rss glacierfs "$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")"
  fi
  umount "$work/mnt-ready"
  # The next mount needs the cache directory free: wait for the daemon to exit.
  for _ in $(seq 1 300); do [ -n "$pid" ] && alive "$pid" || break; sleep 0.1; done
done
fi

# --- the main mounts ---------------------------------------------------------------------------
if want mounts; then
python3 scripts/gen_inventory.py "$ls_count" "$work/inv-flat.json" --flat
echo "preparing $ls_count archives in a vault, and $ls_count files in a native directory..."
"$bin" inventory import --cache-dir "$work/cache" bench "$work/inv-flat.json" >/dev/null
python3 - "$work/native-ls" "$ls_count" <<'PY'
import os, sys
os.makedirs(sys.argv[1])
for i in range(int(sys.argv[2])):
    with open(os.path.join(sys.argv[1], f"file-{i:07d}.dat"), "wb") as f:
        f.truncate(1 + i % 100000)
PY
mount_glacierfs "$work/cache" "$work/mnt"
mkdir -p "$work/native-dd" "$work/rclone-src"
have_rclone=0
if command -v rclone >/dev/null && mount_rclone "$work/rclone-src" "$work/rclone-dd" "$work/rclone-cache-dd" &&
  mount_rclone "$work/native-ls" "$work/rclone-ls" "$work/rclone-cache-ls"; then
  have_rclone=1
fi

echo "staged write and cached read of $dd_mib MiB with dd ($runs runs each)..."
for _ in $(seq "$runs"); do
  dd_once "$work/native-dd" native write_dd read_dd
  dd_once "$work/mnt/bench" glacierfs write_dd read_dd
  if [ "$have_rclone" = 1 ]; then dd_once "$work/rclone-dd" rclone write_dd read_dd; fi
done

if command -v fio >/dev/null; then
  echo "sequential write of $dd_mib MiB with fio ($runs runs each)..."
  fio_once() {
    local dir=$1 target=$2
    rm -f "$dir/fio.bin"
    sync
    fio --name=seqwrite --filename="$dir/fio.bin" --rw=write --bs=1M --size="${dd_mib}M" \
      --ioengine=psync --fallocate=none --output-format=json >"$work/fio.json"
    record write_fio "$target" "$(python3 -c '
import json, sys
bw = json.load(open(sys.argv[1]))["jobs"][0]["write"]["bw_bytes"]
print("%.1f" % (bw / 1e6))' "$work/fio.json")"
    rm -f "$dir/fio.bin"
  }
  for _ in $(seq "$runs"); do
    fio_once "$work/native-dd" native
    fio_once "$work/mnt/bench" glacierfs
    if [ "$have_rclone" = 1 ]; then fio_once "$work/rclone-dd" rclone; fi
  done
fi

echo "ls -l and find over $ls_count entries ($runs runs each)..."
listing_once() {
  record ls "$2" "$(measure ls -l "$1" | cut -d' ' -f1)"
  record find "$2" "$(measure find "$1" -type f | cut -d' ' -f1)"
}
listing_dirs=("$work/native-ls" native "$work/mnt/bench" glacierfs)
if [ "$have_rclone" = 1 ]; then listing_dirs+=("$work/rclone-ls" rclone); fi
# Warm caches on every side alike.
for ((i = 0; i < ${#listing_dirs[@]}; i += 2)); do ls -l "${listing_dirs[i]}" >/dev/null; done
for _ in $(seq "$runs"); do
  for ((i = 0; i < ${#listing_dirs[@]}; i += 2)); do listing_once "${listing_dirs[i]}" "${listing_dirs[i + 1]}"; done
done
entries=$(find "$work/mnt/bench" -maxdepth 1 -type f | wc -l)
if [ "$entries" -lt "$ls_count" ]; then
  echo "bench.sh: the vault lists $entries archives, not $ls_count" >&2
  exit 1
fi
root_mode=$(passthrough_mode "$work/cache/glacierfs.log")
umount "$work/mnt"
if [ "$have_rclone" = 1 ]; then
  umount "$work/rclone-dd" || umount -l "$work/rclone-dd"
  umount "$work/rclone-ls" || umount -l "$work/rclone-ls"
fi
fi

# --- many small files ---------------------------------------------------------------------------
small_src=/usr/share/doc small_files=0
if want smallfiles; then
  small_files=$(find "$small_src" -type f | wc -l)
  echo "cp -r and rsync -a of $small_src ($small_files files) ($runs runs each)..."
  # A vault the mount knows at once: imported from a one-archive inventory.
  python3 scripts/gen_inventory.py 1 "$work/inv-one.json"
  "$bin" inventory import --cache-dir "$work/cache-small" bench "$work/inv-one.json" >/dev/null
  mount_glacierfs "$work/cache-small" "$work/mnt-small"
  small_dirs=("$work/native-small" native "$work/mnt-small/bench" glacierfs)
  if [ -n "$baseline" ]; then
    # The build before a change, on a catalog of its own, measured in the same rounds.
    "$baseline" inventory import --cache-dir "$work/cache-small-base" bench "$work/inv-one.json" >/dev/null
    mkdir -p "$work/mnt-small-base"
    "$baseline" mount --endpoint-url "$endpoint" --cache-dir "$work/cache-small-base" \
      --write-back-delay 1h "$work/mnt-small-base"
    small_dirs+=("$work/mnt-small-base/bench" baseline)
  fi
  mkdir -p "$work/native-small" "$work/rclone-small-src"
  if command -v rclone >/dev/null && mount_rclone "$work/rclone-small-src" "$work/rclone-small" "$work/rclone-cache-small"; then
    small_dirs+=("$work/rclone-small" rclone)
  fi
  for run in $(seq "$runs"); do
    for ((i = 0; i < ${#small_dirs[@]}; i += 2)); do
      dir=${small_dirs[i]} target=${small_dirs[i + 1]}
      sync
      if secs=$(measure cp -r "$small_src" "$dir/cp-$run"); then
        record cp_small "$target" "${secs% *}"
      else
        echo "bench.sh: cp -r into $target failed" >&2
      fi
      if secs=$(measure rsync -a "$small_src/" "$dir/rsync-$run/"); then
        record rsync_small "$target" "${secs% *}"
      else
        echo "bench.sh: rsync -a into $target failed" >&2
      fi
    done
  done
  umount "$work/mnt-small"
  if [ -n "$baseline" ]; then umount "$work/mnt-small-base"; fi
  if mountpoint -q "$work/rclone-small" 2>/dev/null; then umount "$work/rclone-small" || umount -l "$work/rclone-small"; fi
fi

# --- scale -------------------------------------------------------------------------------------
# Whether a large catalog costs time per archive at import, at mount, or when listing one
# directory of the same size: every inventory puts $scale_dir archives in each directory.
if [ "$scale" = 1 ]; then
  for n in $scale_counts; do
    echo "scale: $n archives in directories of $scale_dir (import, mount ready, ls -l; once)..."
    python3 scripts/gen_inventory.py "$n" "$work/inv-scale.json" --dirs "$((n / scale_dir))"
    if [ -n "$baseline" ]; then
      rm -rf "$work/cache-scale"
      m=$(measure "$baseline" inventory import --cache-dir "$work/cache-scale" bench "$work/inv-scale.json")
      record "scale_$n" baseline_import_s "${m% *}"
      record "scale_$n" baseline_import_rss "${m#* }"
    fi
    rm -rf "$work/cache-scale"
    m=$(measure "$bin" inventory import --cache-dir "$work/cache-scale" bench "$work/inv-scale.json")
    rm -f "$work/inv-scale.json"
    record "scale_$n" import_s "${m% *}"
    record "scale_$n" import_rss "${m#* }"
    record "scale_$n" per_archive_us "$(awk -v s="${m% *}" -v n="$n" 'BEGIN { printf "%.2f", s * 1e6 / n }')"
    sync
    mkdir -p "$work/mnt-scale"
    record "scale_$n" ready_s "$(measure "$bin" mount --endpoint-url "$endpoint" --cache-dir "$work/cache-scale" \
      --write-back-delay 1h "$work/mnt-scale" | cut -d' ' -f1)"
    pid=$("$bin" status --cache-dir "$work/cache-scale" --json | python3 -c 'import json, sys; print(json.load(sys.stdin).get("Pid") or "")')
    ls -l "$work/mnt-scale/bench/dir-000" >/dev/null  # warm, as the listing rows do
    record "scale_$n" ls_s "$(measure ls -l "$work/mnt-scale/bench/dir-000" | cut -d' ' -f1)"
    entries=$(find "$work/mnt-scale/bench/dir-000" -maxdepth 1 -type f | wc -l)
    umount "$work/mnt-scale"
    for _ in $(seq 1 300); do [ -n "$pid" ] && alive "$pid" || break; sleep 0.1; done
    if [ "$entries" -ne "$scale_dir" ]; then
      echo "bench.sh: dir-000 of the $n-archive vault lists $entries archives, not $scale_dir" >&2
      exit 1
    fi
  done
  rm -rf "$work/cache-scale"
fi

# --- without passthrough -------------------------------------------------------------------------
if want unpriv; then
echo "staged write and cached read without passthrough, as unprivileged ($runs runs each)..."
unpriv_mode="not measured"
if unshare --user --map-root-user --mount "$self" --unprivileged-inner "$work" "$runs" "$dd_mib" "$endpoint" "$bin"; then
  unpriv_mode=$(passthrough_mode "$work/cache-unpriv/glacierfs.log" "$work/unpriv.log")
else
  echo "bench.sh: the mount in a user namespace failed; see $work/unpriv.log" >&2
fi
fi

# --- tree hash ---------------------------------------------------------------------------------
if want treehash; then
echo "tree hash of $th_mib MiB against openssl dgst -sha256 ($runs runs each)..."
head -c "$((th_mib << 20))" /dev/urandom >"$work/th.bin"
cat "$work/th.bin" >/dev/null  # from the page cache, for both
for _ in $(seq "$runs"); do
  record treehash native "$(measure openssl dgst -sha256 "$work/th.bin" | cut -d' ' -f1)"
  record treehash glacierfs "$(measure "$bin" treehash "$work/th.bin" | cut -d' ' -f1)"
done
rm -f "$work/th.bin"
fi

# --- upload CPU --------------------------------------------------------------------------------
if want upload; then
echo "CPU per GiB uploaded through the upload engine and the SDK ($runs runs)..."
# The test prints lines like "cpu: upload ...: 0.357 CPU-s (...; 1.430 CPU-s/GiB, ...)"; the
# figure per GiB is the last "CPU-s/GiB" of the line that starts with $2.
per_gib() { echo "$1" | grep "cpu: $2" | grep -o '[0-9.]* CPU-s/GiB' | tail -1 | cut -d' ' -f1; }
# The floor is the SDK's own hashing: two single-stream SHA-256 passes over every body (each
# MiB for the tree hash, the whole body for the signature), which the test measures as twice
# its linear SHA-256 pass and prints as "the SDK's own hashing". The upload itself hashes each
# body once, both hashes in one pass, and the SDK hashes nothing.
for _ in $(seq "$runs"); do
  out=$(cargo test --release --quiet --test upload_engine cpu_cost_of_an_upload_through_the_sdk \
    -- --nocapture --test-threads=1 2>&1) || { echo "$out" >&2; echo "bench.sh: the upload measurement failed" >&2; exit 1; }
  upload=$(per_gib "$out" "upload of") hashing=$(per_gib "$out" "the SDK's own hashing") bare=$(per_gib "$out" "the same parts")
  if [ -z "$upload" ] || [ -z "$hashing" ] || [ -z "$bare" ]; then
    echo "$out" >&2
    echo "bench.sh: no CPU figures in the test's output" >&2
    exit 1
  fi
  record upload_cpu glacierfs "$upload"
  record upload_cpu native "$hashing"
  record sdk_cpu glacierfs "$bare"
  record sdk_cpu native "$hashing"
done
fi

# --- throughput over a distant endpoint -------------------------------------------------------
# The link: what a real endpoint 20–100 ms away gives each connection.
lat_ms=50 lat_mb=20
if [ "$quick" = 1 ]; then lat_mib=128 one_mib=16; else lat_mib=1024 one_mib=64; fi
if want latency; then
echo "upload, retrieval and export of $lat_mib MiB behind $lat_ms ms and $lat_mb MB/s per connection ($runs runs each)..."
"$emulator_bin" --latency "$lat_ms" --bandwidth "$lat_mb" --job-delay 0 --bucket bench-lat \
  >"$work/emu.url" 2>"$work/emu.log" &
emu_pid=$!
for _ in $(seq 1 100); do [ -s "$work/emu.url" ] && break; sleep 0.1; done
emu_endpoint=$(head -1 "$work/emu.url")
# The emulator's one key pair, for every command of this part.
lat_env=(env AWS_ACCESS_KEY_ID=AKIDEMULATOR AWS_SECRET_ACCESS_KEY=emulator-secret AWS_REGION=us-east-1)
# The build whose turn it is: this one ("$bin", its samples under "glacierfs") or, with
# --baseline, the other one (its samples under "baseline"), each with a vault of its own.
lat_builds=("$bin:glacierfs:lat")
if [ -n "$baseline" ]; then lat_builds+=("$baseline:baseline:latb"); fi
# Mounts the emulator's vaults on $work/mnt-lat-$1 with its catalog in $work/cache-lat-$1, by
# build $lbin.
mount_lat() {
  mkdir -p "$work/mnt-lat-$1"
  "${lat_env[@]}" "$lbin" mount --endpoint-url "$emu_endpoint" --cache-dir "$work/cache-lat-$1" \
    --write-back-delay 1h --poll-interval 1s "$work/mnt-lat-$1"
}
# Unmounts $work/mnt-lat-$1 and waits for its daemon to exit, so its cache is free again.
unmount_lat() {
  local pid
  pid=$("$lbin" status --cache-dir "$work/cache-lat-$1" --json | python3 -c 'import json, sys; print(json.load(sys.stdin).get("Pid") or "")')
  umount "$work/mnt-lat-$1"
  for _ in $(seq 1 300); do [ -n "$pid" ] && alive "$pid" || break; sleep 0.1; done
}
# Seconds that command "$@" took (its output discarded), with the emulator's keys.
timed() { measure "${lat_env[@]}" "$@" 2>>"$work/lat.log" | cut -d' ' -f1; }
# MB/s of $1 MiB taking $2 seconds more than the 1 MiB baseline's $3.
lat_rate() { awk -v m="$1" -v b="$2" -v s="$3" 'BEGIN { d = b - s; if (d <= 0) d = b; printf "%.1f", (m - 1) * 1.048576 / d }'; }
for build in "${lat_builds[@]}"; do
  IFS=: read -r lbin label v <<<"$build"
  mount_lat "up-$v"
  mkdir -p "$work/mnt-lat-up-$v/$v/big" "$work/mnt-lat-up-$v/$v/small"
done
for run in $(seq "$runs"); do
  # The builds take turns, run by run, so that both see the same load.
  for build in "${lat_builds[@]}"; do
    IFS=: read -r lbin label v <<<"$build"
    up="$work/mnt-lat-up-$v/$v"
    # New content each run, uploaded anew (the last run's archive is deleted as it is replaced).
    head -c 1M /dev/urandom >"$up/small/f"
    head -c "${lat_mib}M" /dev/urandom >"$up/big/f"
    small=$(timed "$lbin" sync --wait "$up/small/f")
    big=$(timed "$lbin" sync --wait "$up/big/f")
    record lat_upload "$label" "$(lat_rate "$lat_mib" "$big" "$small")"
  done
done
for build in "${lat_builds[@]}"; do
  IFS=: read -r lbin label v <<<"$build"
  # A second mount, with a catalog of its own, knows the archives from an inventory (the
  # first mount's catalog, written in Glacier's inventory format) and has none of their data:
  # its reads are real retrievals.
  "$lbin" inventory export --cache-dir "$work/cache-lat-up-$v" "$v" "$work/$v-files.json"
  python3 - "$work/$v-files.json" "$work/$v-inventory.json" <<'PY'
import json, sys
src = json.load(open(sys.argv[1]))
json.dump({
    "VaultARN": f"arn:aws:glacier:us-east-1:123456789012:vaults/{src['vault']}",
    "InventoryDate": "2099-01-01T00:00:00Z",
    "ArchiveList": [{"ArchiveId": f["archive_id"], "ArchiveDescription": f["description"],
                     "CreationDate": f["creation_date"], "Size": f["size"],
                     "SHA256TreeHash": f["tree_hash"]} for f in src["files"]],
}, open(sys.argv[2], "w"))
PY
done
for run in $(seq "$runs"); do
  for build in "${lat_builds[@]}"; do
    IFS=: read -r lbin label v <<<"$build"
    # Cold each run: a fresh catalog and cache.
    if [ "$run" -gt 1 ]; then unmount_lat "down-$v"; fi
    rm -rf "$work/cache-lat-down-$v"
    "$lbin" inventory import --cache-dir "$work/cache-lat-down-$v" "$v" "$work/$v-inventory.json" >/dev/null
    mount_lat "down-$v"
    down="$work/mnt-lat-down-$v/$v"
    small=$(timed "$lbin" retrieve --wait "$down/small/f")
    big=$(timed "$lbin" retrieve --wait "$down/big/f")
    record lat_download "$label" "$(lat_rate "$lat_mib" "$big" "$small")"
    small=$(timed "$lbin" export --s3-endpoint-url "$emu_endpoint" "$down/small" "s3://bench-lat/$v-$run/small")
    big=$(timed "$lbin" export --s3-endpoint-url "$emu_endpoint" "$down/big" "s3://bench-lat/$v-$run/big")
    record lat_export "$label" "$(lat_rate "$lat_mib" "$big" "$small")"
  done
done
# One connection, one request of $one_mib MiB, each way: what the link gives a single stream.
"${lat_env[@]}" "$venv/bin/python" - "$emu_endpoint" "$one_mib" "$runs" "$work/res" <<'PY'
import os, sys, time
import boto3
from botocore.config import Config
endpoint, mib, runs, res = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cfg = Config(max_pool_connections=1, retries={"max_attempts": 1}, s3={"addressing_style": "path"})
glacier = boto3.client("glacier", endpoint_url=endpoint, region_name="us-east-1", config=cfg)
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=cfg)
body = os.urandom(mib << 20)
def rate(secs):
    return f"{mib * 1.048576 / secs:.1f}"
def record(key, value):
    os.makedirs(os.path.join(res, key), exist_ok=True)
    with open(os.path.join(res, key, "single"), "a") as f:
        f.write(value + "\n")
for _ in range(runs):
    t = time.monotonic()
    archive = glacier.upload_archive(vaultName="lat", body=body)["archiveId"]
    up = time.monotonic() - t
    job = glacier.initiate_job(vaultName="lat", jobParameters={"Type": "archive-retrieval", "ArchiveId": archive})["jobId"]
    while not glacier.describe_job(vaultName="lat", jobId=job)["Completed"]:
        time.sleep(0.2)
    t = time.monotonic()
    glacier.get_job_output(vaultName="lat", jobId=job)["body"].read()
    down = time.monotonic() - t
    glacier.delete_archive(vaultName="lat", archiveId=archive)
    t = time.monotonic()
    s3.put_object(Bucket="bench-lat", Key="single", Body=body)
    put = time.monotonic() - t
    record("lat_upload", rate(up))
    record("lat_download", rate(down))
    record("lat_export", rate(put))
PY
for build in "${lat_builds[@]}"; do
  IFS=: read -r lbin label v <<<"$build"
  unmount_lat "up-$v"
  unmount_lat "down-$v"
done
kill "$emu_pid" 2>/dev/null || true
emu_pid=""
# What each default concurrency allows: connections in flight × the link's rate.
lat_upload_conns=$("$bin" mount --help | sed -n 's/.*--upload-concurrency <N>.*default: \([0-9]*\).*/\1/p')
lat_upload_conns=${lat_upload_conns:-4}
# The retrieval fetches PARALLEL_CHUNKS (src/engine/retrieve/fetch.rs) chunks at once. The
# export to S3 runs PART_TASKS (src/engine/export/s3/stream.rs) part tasks, each sending one
# part to S3 while it fetches the next from Glacier: two connections each, and every byte
# crosses the link twice, so the export allows half its connections' rate end to end.
lat_download_conns=$(sed -n 's/^const PARALLEL_CHUNKS: usize = \([0-9]*\);/\1/p' src/engine/retrieve/fetch.rs)
lat_export_tasks=$(sed -n 's/^const PART_TASKS: usize = \([0-9]*\);/\1/p' src/engine/export/s3/stream.rs)
lat_export_conns=$((2 * ${lat_export_tasks:-0}))
fi

# --- report ------------------------------------------------------------------------------------
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo
python3 - "$work/res" "$json" <<PY
import json, os, platform, statistics, subprocess, sys

res, out = sys.argv[1], sys.argv[2]

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""

def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()

mem_kib = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal:"))
fs = sh("findmnt -no SOURCE,FSTYPE,OPTIONS -T '$work'").split()
device = fs[0] if fs else ""
machine = {
    "cpu": cpu_model(),
    "cores": os.cpu_count(),
    "ram_gib": round(mem_kib / 2**20, 1),
    "kernel": platform.release(),
    "disk": {
        "device": device,
        "filesystem": fs[1] if len(fs) > 1 else "",
        "mount_options": fs[2] if len(fs) > 2 else "",
        "rotational": sh(f"lsblk -dno ROTA {device}") if device.startswith("/dev/") else "",
        "model": sh(f"lsblk -dno MODEL {device}") if device.startswith("/dev/") else "",
    },
    "load_average_before": "$load_before",
    "load_average_after": "$load_after",
}

# key: (label, unit, whether higher is better, the target as text, target ratio)
rows = [
    ("write_dd", "dd $dd_mib MiB into a vault (staged write)", "MB/s", True, ">= 0.9x native", 0.9),
    ("write_fio", "fio sequential write of $dd_mib MiB", "MB/s", True, "", None),
    ("read_dd", "dd $dd_mib MiB out of a cached file", "MB/s", True, ">= 0.9x native", 0.9),
    ("write_dd_unpriv", "  the same write without passthrough", "MB/s", True, ">= 0.7x native", 0.7),
    ("read_dd_unpriv", "  the same read without passthrough", "MB/s", True, ">= 0.7x native", 0.7),
    ("ls", "ls -l of $ls_count archives", "s", False, "<= 1.0x native", 1.0),
    ("find", "find over $ls_count archives", "s", False, "<= 1.5x native", 1.5),
    ("cp_small", "cp -r of $small_files small files", "s", False, "<= 3x native", 3),
    ("rsync_small", "rsync -a of $small_files small files", "s", False, "<= 4x native", 4),
    ("treehash", "tree hash of $th_mib MiB (native: openssl)", "s", False, "<= 0.55x openssl", 0.55),
    ("import_time", "import of $inv_count-archive inventory", "s", False, "<= 3 s", None),
    ("import_rss", "  its peak RSS", "MiB", False, "<= 150 MB", None),
    ("import_cpu", "  its CPU time (user and system)", "CPU-s", False, "", None),
    ("mount_ready", "mount ready, $inv_count catalog entries", "s", False, "<= 1 s", None),
    ("idle_rss", "  the daemon's idle RSS", "MiB", False, "<= 100 MB", None),
    ("upload_cpu", "CPU per GiB uploaded (native: SDK's hashing)", "CPU-s/GiB", False, "<= 1.1x hashing", 1.1),
    ("sdk_cpu", "  the bare SDK from memory, for scale", "CPU-s/GiB", False, "", None),
]
absolute = {"import_time": 3.0, "import_rss": 150 * 1e6 / 2**20, "mount_ready": 1.0, "idle_rss": 100 * 1e6 / 2**20}

def samples(key, target):
    try:
        with open(os.path.join(res, key, target)) as f:
            return [float(x) for x in f.read().split()]
    except FileNotFoundError:
        return []

def med(xs):
    return statistics.median(xs) if xs else None

def fmt(v, unit):
    if v is None:
        return "—"
    if unit == "MB/s":
        return f"{v:,.0f} MB/s"
    if unit == "s":
        return f"{v:.3f} s"
    if unit == "MiB":
        return f"{v:.0f} MiB"
    return f"{v:.3f}"

results = []
print(f"machine: {machine['cores']} cores ({machine['cpu']}), {machine['ram_gib']} GiB, kernel "
      f"{machine['kernel']}, {machine['disk']['filesystem']} on {machine['disk']['device']}; "
      f"load {machine['load_average_before']} before, {machine['load_average_after']} after")
print("passthrough: root mount $root_mode; unprivileged mount $unpriv_mode")
print(f"medians of $runs run(s); ratio = glacierfs / native")
baseline = "$baseline"
head = f"{'measurement':<46} {'native':>14} {'rclone':>14} {'glacierfs':>14} {'ratio':>7}  target"
print(head)
print("-" * len(head))
for key, label, unit, higher, target_text, target_ratio in rows:
    native = samples(key, "native")
    rclone, glacierfs = samples(key, "rclone"), samples(key, "glacierfs")
    n, r, g = med(native), med(rclone), med(glacierfs)
    ratio = g / n if (g is not None and n) else None
    verdict = ""
    if target_ratio is not None and ratio is not None:
        ok = ratio >= target_ratio if higher else ratio <= target_ratio
        verdict = "ok" if ok else "MISSED"
    elif key in absolute and g is not None:
        verdict = "ok" if g <= absolute[key] else "MISSED"
    print(f"{label:<46} {fmt(n, unit):>14} {fmt(r, unit):>14} {fmt(g, unit):>14} "
          f"{(f'{ratio:.2f}x' if ratio is not None else '—'):>7}  {target_text} {verdict}".rstrip())
    results.append({
        "key": key, "measurement": label.strip(), "unit": unit, "higher_is_better": higher,
        "median": {"native": n, "rclone": r, "glacierfs": g},
        "ratio_to_native": {"glacierfs": ratio, "rclone": r / n if (r is not None and n) else None},
        "target": target_text or None, "verdict": verdict or None,
        "samples": {"native": native, "rclone": rclone, "glacierfs": glacierfs},
    })
    # The import beside another build, measured in turns with this one.
    before = samples(key, "baseline")
    if before:
        b = med(before)
        ratio = g / b if (g is not None and b) else None
        print(f"{'  the same, by the baseline build':<46} {'':>14} {'':>14} {fmt(b, unit):>14} "
              f"{(f'{ratio:.2f}x' if ratio is not None else '—'):>7}  this build / baseline")
        results[-1]["baseline"] = {"binary": baseline, "median": b, "ratio": ratio, "samples": before}

doc = {
    "machine": machine,
    "runs": $runs,
    "quick": bool($quick),
    "sizes": {"dd_mib": $dd_mib, "listing_entries": $ls_count, "inventory_archives": $inv_count,
              "treehash_mib": $th_mib},
    "passthrough": {"root_mount": "$root_mode", "unprivileged_mount": "$unpriv_mode"},
    "results": results,
}
# Throughput behind the link model: each against what its default concurrency allows.
lat_ms, lat_mb = $lat_ms, $lat_mb
lat_rows = [
    ("lat_upload", f"upload of $lat_mib MiB (sync --wait)", int("${lat_upload_conns:-0}" or 0)),
    ("lat_download", f"retrieval download of $lat_mib MiB", int("${lat_download_conns:-0}" or 0)),
    ("lat_export", f"export of $lat_mib MiB to S3", int("${lat_export_conns:-0}" or 0)),
]
# Each byte an export moves comes in from Glacier and goes out to S3: two link crossings.
crossings = {"lat_export": 2}
print()
head = (f"{f'behind {lat_ms} ms, {lat_mb} MB/s a connection':<46} {'1 connection':>14} "
        f"{'allowed':>14} {'glacierfs':>14} {'ratio':>7}  target")
print(head)
print("-" * len(head))
lat_results = []
for key, label, conns in lat_rows:
    single, glacierfs = samples(key, "single"), samples(key, "glacierfs")
    s1, g = med(single), med(glacierfs)
    allowed = conns * lat_mb / crossings.get(key, 1) if conns else None
    ratio = g / allowed if (g is not None and allowed) else None
    verdict = ("ok" if ratio >= 0.8 else "MISSED") if ratio is not None else ""
    allowed_text = f"{allowed:,.0f} MB/s ({conns})" if allowed else "—"
    print(f"{label:<46} {fmt(s1, 'MB/s'):>14} {allowed_text:>14} {fmt(g, 'MB/s'):>14} "
          f"{(f'{ratio:.2f}x' if ratio is not None else '—'):>7}  >= 0.8x allowed {verdict}".rstrip())
    lat_results.append({
        "key": key, "measurement": label, "unit": "MB/s", "connections": conns,
        "allowed": allowed, "median": {"single_connection": s1, "glacierfs": g},
        "ratio_to_allowed": ratio, "target": ">= 0.8x allowed", "verdict": verdict or None,
        "samples": {"single_connection": single, "glacierfs": glacierfs},
    })
    # The same beside another build, run by run in turns with this one.
    before = samples(key, "baseline")
    if before:
        b = med(before)
        speedup = g / b if (g is not None and b) else None
        print(f"{'  the same, by the baseline build':<46} {'':>14} {'':>14} {fmt(b, 'MB/s'):>14} "
              f"{(f'{speedup:.2f}x' if speedup is not None else '—'):>7}  this build / baseline")
        lat_results[-1]["baseline"] = {"binary": baseline, "median": b, "ratio": speedup,
                                       "samples": before}
doc["latency"] = {"latency_ms": lat_ms, "bandwidth_mb_s": lat_mb, "results": lat_results}

# The scale rows, one column per inventory size (each measured once).
scale_counts = [int(n) for n in "$scale_counts".split()]
if os.path.isdir(os.path.join(res, f"scale_{scale_counts[0]}")):
    print()
    head = f"{f'scale (directories of {scale_counts[0]:,})':<46}" + "".join(f"{f'{n:,}':>14}" for n in scale_counts) + "  target"
    print(head)
    print("-" * len(head))
    scale_rows = [
        ("import_s", "import", "s", "<= 3 s at 1M, <= 40 s at 10M"),
        ("per_archive_us", "  time per archive", "us", ""),
        ("import_rss", "  peak RSS", "MiB", "<= 150 MB at 1M, <= 200 MB at 10M"),
        ("ready_s", "mount ready", "s", "<= 1 s"),
        ("ls_s", f"ls -l of a {scale_counts[0]:,}-entry directory", "s", "no slower than at 1M"),
    ]
    if "$baseline":
        scale_rows[1:1] = [("baseline_import_s", "  the import by the baseline build", "s", "")]
        scale_rows[4:4] = [("baseline_import_rss", "  its peak RSS", "MiB", "")]
    scale_results = {}
    for key, label, unit, target in scale_rows:
        values = {n: med(samples(f"scale_{n}", key)) for n in scale_counts}
        scale_results[key] = {str(n): v for n, v in values.items()}
        cells = "".join(f"{('—' if v is None else (f'{v:.2f} us' if unit == 'us' else fmt(v, unit))):>14}" for v in values.values())
        print(f"{label:<46}{cells}  {target}".rstrip())
    doc["scale"] = {"directory_entries": scale_counts[0], "results": scale_results}

with open(out, "w") as f:
    json.dump(doc, f, indent=2, ensure_ascii=False)
    f.write("\n")
print(f"\nJSON: {out}")
PY
