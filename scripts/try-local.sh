#!/usr/bin/env bash
# Try glacierfs on this machine without an AWS account: builds a release binary, starts moto
# (a local Glacier endpoint) in a virtualenv this script creates, fills a demo vault with a few
# archives, and mounts it.
#
#   scripts/try-local.sh [MOUNTPOINT]   # mount (default: target/try-local/mnt)
#   scripts/try-local.sh --stop         # unmount, stop moto, remove the demo state
#
# GLACIERFS_BIN=path uses that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
state="$root/target/try-local"
venv="$root/target/moto-venv"

stop() {
  if [ -f "$state/mountpoint" ]; then
    mnt=$(cat "$state/mountpoint")
    if mountpoint -q "$mnt" 2>/dev/null; then
      umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || fusermount3 -u "$mnt" 2>/dev/null || true
    fi
  fi
  # The daemon exits once its mount is gone; give it a moment, then make sure.
  if [ -f "$state/cache/lock" ]; then
    pid=$(cat "$state/cache/lock" 2>/dev/null || true)
    for _ in $(seq 1 50); do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  fi
  if [ -f "$state/moto.pid" ]; then
    kill "$(cat "$state/moto.pid")" 2>/dev/null || true
  fi
  rm -rf "$state"
  echo "try-local: stopped"
}

if [ "${1:-}" = "--stop" ]; then
  stop
  exit 0
fi
if [ -d "$state" ]; then
  echo "try-local: a previous try-out is still set up; stopping it first"
  stop
fi
mnt=${1:-$state/mnt}
mkdir -p "$state" "$mnt"
mnt=$(cd "$mnt" && pwd)

if [ -n "${GLACIERFS_BIN:-}" ]; then
  bin=$GLACIERFS_BIN  # a binary built already (the test suite passes its own)
else
  echo "try-local: building glacierfs (release)..."
  cargo build --release --quiet
  bin="$root/target/release/glacierfs"
fi

if [ ! -x "$venv/bin/moto_server" ]; then
  echo "try-local: creating a virtualenv with moto[server] (a local Glacier endpoint)..."
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]'
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$state/moto.log" 2>&1 &
echo $! >"$state/moto.pid"
for _ in $(seq 1 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
  sleep 0.1
done
endpoint="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=try-local AWS_SECRET_ACCESS_KEY=try-local AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

echo "try-local: creating the vault 'demo' with a few archives..."
"$venv/bin/python" - "$endpoint" <<'PY'
import base64, json, sys, boto3
glacier = boto3.client("glacier", endpoint_url=sys.argv[1], region_name="us-east-1")
glacier.create_vault(vaultName="demo")
def mt2(path, mtime):
    doc = json.dumps({"filename": path, "mtime": mtime}, separators=(",", ":"))
    return "mt2 " + base64.urlsafe_b64encode(doc.encode()).decode().rstrip("=")
archives = [
    (mt2("docs/readme.txt", "20240105T101500Z"), b"Hello from a Glacier archive.\n"),
    (mt2("photos/2023/beach.jpg", "20230712T160000Z"), b"\xff\xd8 not really a photo"),
    ("<m><v>4</v><p>" + base64.b64encode(b"old-tool/backup.tar").decode() + "</p><lm>20190301T000000Z</lm></m>", b"tar" * 100),
    ("notes-with-a-plain-description.md", b"# notes\n"),
]
for description, body in archives:
    glacier.upload_archive(vaultName="demo", archiveDescription=description, body=body)
PY

echo "$mnt" >"$state/mountpoint"
"$bin" mount --endpoint-url "$endpoint" --cache-dir "$state/cache" --poll-interval 2s "$mnt"

cat <<MSG

glacierfs is mounted at $mnt, backed by a local moto endpoint ($endpoint).

Try:
  ls $mnt                                   # vaults are directories
  ls -lR $mnt/demo                          # archives appear once the inventory job is done (~10 s)
  getfattr -d -m user.glacier $mnt/demo/docs/readme.txt
  cat $mnt/demo/docs/readme.txt             # a cold archive: "Resource temporarily unavailable"
  mkdir $mnt/another-vault                  # creates a vault
  rmdir $mnt/another-vault                  # and deletes it

The daemon's log: $state/cache/glacierfs.log
Stop everything with: scripts/try-local.sh --stop
MSG
