#!/usr/bin/env python3
"""Fails when a locked dependency needs a newer Rust than the workspace declares.

The workspace's `rust-version` is a promise to users; a `cargo update` can break it
silently, because cargo only warns about a dependency's `rust-version` on a toolchain
older than it. This reads `cargo metadata` (the lock, for every target) and compares:
no second toolchain is needed. Run by .ci/run.

    scripts/check-rust-version.py [--manifest-path Cargo.toml]
"""
import argparse
import json
import subprocess
import sys


def version(text: str) -> tuple:
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest-path", default="Cargo.toml")
    args = ap.parse_args()
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked",
         "--manifest-path", args.manifest_path],
        check=True, capture_output=True, text=True).stdout)
    members = set(meta["workspace_members"])
    declared = {p["name"]: p.get("rust_version") for p in meta["packages"] if p["id"] in members}
    missing = [name for name, rv in declared.items() if not rv]
    if missing:
        print(f"rust-version: not declared by {', '.join(sorted(missing))}")
        return 1
    floor = min(version(rv) for rv in declared.values())
    too_new = sorted(
        ((version(p["rust_version"]), p["name"], p["version"])
         for p in meta["packages"]
         if p["id"] not in members and p.get("rust_version")
         and version(p["rust_version"]) > floor),
        reverse=True)
    shown = ".".join(map(str, floor[:2]))
    if too_new:
        for need, name, ver in too_new:
            print(f"rust-version: {name} {ver} needs Rust {'.'.join(map(str, need))}, "
                  f"the workspace declares {shown}")
        print("raise `rust-version` in Cargo.toml, or pin the dependency lower")
        return 1
    newest = max((version(p["rust_version"]), p["name"]) for p in meta["packages"]
                 if p["id"] not in members and p.get("rust_version"))
    print(f"rust-version {shown}: every locked dependency fits "
          f"(the most demanding: {newest[1]}, Rust {'.'.join(map(str, newest[0][:2]))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
