"""Command line for the tiny world.

python -m helpers.tiny build [--force] [--from-scratch] [--only tiny-base tiny-chat ...]
python -m helpers.tiny report          # build times and the measured SFT gain
python -m helpers.tiny freeze          # the cache's models become the repository's prebuilt world
"""

from __future__ import annotations

import argparse
import json

from helpers.registry import tiny_dir
from helpers.tiny.build import DEFAULT_PARTS, PARTS, build, freeze, read_manifest


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m helpers.tiny", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build what is missing (or everything with --force)")
    b.add_argument("--force", action="store_true", help="rebuild even if the cache is current")
    b.add_argument(
        "--only",
        nargs="+",
        choices=PARTS,
        default=list(DEFAULT_PARTS),
        help="parts to build (default: all but tiny-teacher)",
    )
    b.add_argument(
        "--from-scratch",
        action="store_true",
        help="train every model here instead of copying the repository's prebuilt ones",
    )
    sub.add_parser("report", help="print the build report")
    sub.add_parser("freeze", help="copy the cache's tokenizer and models into data/tiny-world/")
    args = parser.parse_args()
    if args.command == "build":
        build(args.only, force=args.force, from_scratch=args.from_scratch)
        print(f"[tiny] cache: {tiny_dir()}  (`python -m helpers.tiny report` shows build times and scores)")
    elif args.command == "freeze":
        freeze()
    else:
        print(json.dumps(read_manifest(), indent=2))


if __name__ == "__main__":
    main()
