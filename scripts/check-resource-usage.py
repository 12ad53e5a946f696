#!/usr/bin/env python3
"""Checks the ptxas resource-usage report that kernels/build.rs writes (nvcc --resource-usage)
and prints a one-line-per-kernel table.

    python3 scripts/check-resource-usage.py PATH/resource-usage.txt [--no-spills REGEX ...]

Fails (exit 1) when a kernel whose name matches a --no-spills pattern has spill stores or
loads, or a non-zero stack frame, for any target architecture, or when no kernel matches a
pattern (so a rename cannot silently disable the check).
"""
from __future__ import annotations

import argparse
import re
import sys


def parse(text: str) -> list[dict]:
    kernels: list[dict] = []
    cur = None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '([^']+)' for '([^']+)'", line)
        if m:
            cur = {"name": m.group(1), "arch": m.group(2), "stack": None, "spill_st": None,
                   "spill_ld": None, "regs": None, "smem": 0}
            kernels.append(cur)
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            cur["stack"], cur["spill_st"], cur["spill_ld"] = map(int, m.groups())
            continue
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur["regs"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            cur["smem"] = int(s.group(1)) if s else 0
    return kernels


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("--no-spills", action="append", default=[], metavar="REGEX")
    ap.add_argument("--quiet", action="store_true", help="print only failures and a summary")
    args = ap.parse_args()
    with open(args.report) as f:
        kernels = parse(f.read())
    if not kernels:
        print(f"{args.report}: no kernels found in the report", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"{'kernel':<34} {'arch':<8} {'regs':>5} {'smem B':>7} {'stack':>6} {'spill st/ld':>12}")
        for k in kernels:
            print(f"{k['name']:<34} {k['arch']:<8} {k['regs'] or 0:>5} {k['smem']:>7} {k['stack'] or 0:>6} "
                  f"{k['spill_st'] or 0:>5}/{k['spill_ld'] or 0:<6}")
    bad = 0
    for pat in args.no_spills:
        rx = re.compile(pat)
        hits = [k for k in kernels if rx.search(k["name"])]
        if not hits:
            print(f"no kernel matches --no-spills {pat!r}", file=sys.stderr)
            bad += 1
        for k in hits:
            if k["spill_st"] is None:
                print(f"{k['name']} ({k['arch']}): no stack/spill line in the report", file=sys.stderr)
                bad += 1
            elif k["spill_st"] or k["spill_ld"] or k["stack"]:
                print(f"{k['name']} ({k['arch']}): {k['stack']} bytes stack, {k['spill_st']} bytes spill "
                      f"stores, {k['spill_ld']} bytes spill loads", file=sys.stderr)
                bad += 1
    spilling = [f"{k['name']} ({k['arch']})" for k in kernels if k["spill_st"] or k["spill_ld"]]
    print(f"resource usage: {len(kernels)} kernel builds, {len(spilling)} with spills"
          f"{': ' + ', '.join(spilling) if spilling else ''}; {'FAILED' if bad else 'ok'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
