#!/usr/bin/env python3
"""Add a stratified, group-disjoint train/val/test split to a manifest (see `--help`).

Same as `python -m facelab split`; kept at the top level for notebooks and scripts that call it.
Never moves, changes or deletes a source file.
"""

import sys

from facelab.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["split", *sys.argv[1:]]))
