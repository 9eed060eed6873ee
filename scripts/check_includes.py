#!/usr/bin/env python3
"""check_includes.py — the include arrows of src/ point down the module table of docs/ARCHITECTURE.md.

The table ("## Folders", listed bottom-up) is read from the document itself: a folder may include
its own files, include/lmx.h and the folders of the rows above its own (folders sharing a row are
peers and do not include each other). Every `#include "X/..."` of a .c/.h/.cu/.cuh file under src/
is checked; a violation prints `file:line: folder -> included folder` and the exit status is 1.

Usage: scripts/check_includes.py [REPO_ROOT]   (default: the folder above this script)
"""
import os
import re
import sys


def table_rows(doc):
    """The folders of each row of the module table, bottom-up: [["util"], ["formats"], ...]."""
    rows, in_folders = [], False
    for line in doc.splitlines():
        if line.startswith("## "):
            in_folders = line.strip() == "## Folders"
            continue
        if not in_folders or not line.startswith("|"):
            continue
        first = line.split("|")[1]
        folders = re.findall(r"`src/([a-z_]+)/`", first)
        if folders:
            rows.append(folders)
    return rows


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "ARCHITECTURE.md"), encoding="utf-8") as f:
        rows = table_rows(f.read())
    if not rows:
        print("check_includes: no module table found in docs/ARCHITECTURE.md")
        return 2
    rank = {d: i for i, row in enumerate(rows) for d in row}
    src = os.path.join(root, "src")
    bad = 0
    for folder in sorted(os.listdir(src)):
        if not os.path.isdir(os.path.join(src, folder)):
            continue
        if folder not in rank:
            print(f"src/{folder}/: not in the module table of docs/ARCHITECTURE.md")
            bad += 1
            continue
        for dirpath, _, files in os.walk(os.path.join(src, folder)):
            for name in sorted(files):
                if not name.endswith((".c", ".h", ".cu", ".cuh")):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8", errors="replace") as f:
                    for n, line in enumerate(f, 1):
                        m = re.match(r'\s*#\s*include\s+"([a-z_]+)/', line)
                        if not m or m.group(1) == folder:
                            continue
                        inc = m.group(1)
                        if inc not in rank or rank[inc] >= rank[folder]:
                            print(f"{os.path.relpath(path, root)}:{n}: {folder} -> {inc}")
                            bad += 1
    print(f"check_includes: {bad} include(s) against the module table" if bad else
          f"check_includes: every include of src/ points down the module table ({len(rank)} folders)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
