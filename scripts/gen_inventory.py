#!/usr/bin/env python3
"""Writes a synthetic Glacier vault inventory (JSON) for benchmarks.

    gen_inventory.py COUNT FILE [--flat | --dirs N]

Archive ids are 138 characters like Glacier's, descriptions are mt2 (mt-aws-glacier's format,
as glacierfs writes them), and paths spread over 1,000 directories (N with --dirs) unless
--flat puts every archive in the vault's top directory.
"""
import base64
import hashlib
import json
import sys


def mt2(path, mtime="20240101T000000Z"):
    doc = json.dumps({"filename": path, "mtime": mtime}, separators=(",", ":"))
    return "mt2 " + base64.urlsafe_b64encode(doc.encode()).decode().rstrip("=")


def main():
    count, path = int(sys.argv[1]), sys.argv[2]
    flat = "--flat" in sys.argv[3:]
    dirs = int(sys.argv[sys.argv.index("--dirs") + 1]) if "--dirs" in sys.argv else 1000
    with open(path, "w") as out:
        out.write('{"VaultARN":"arn:aws:glacier:us-east-1:123456789012:vaults/bench",'
                  '"InventoryDate":"2099-01-01T00:00:00Z","ArchiveList":[')
        for i in range(count):
            digest = hashlib.sha256(str(i).encode()).hexdigest()
            archive_id = (digest * 3)[:138]
            name = f"file-{i:07d}.dat" if flat else f"dir-{i % dirs:03d}/file-{i:07d}.dat"
            record = {
                "ArchiveId": archive_id,
                "ArchiveDescription": mt2(name),
                "CreationDate": "2024-01-01T00:00:00Z",
                "Size": 1 + i % 100000,
                "SHA256TreeHash": digest,
            }
            if i:
                out.write(",")
            out.write(json.dumps(record, separators=(",", ":")))
        out.write("]}")


if __name__ == "__main__":
    main()
