"""`python -m rtpcore.callgen --variant NAME --out DIR`: write one generated call and its truth.json."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rtpcore.callgen.render import render
from rtpcore.callgen.scenario import VARIANTS


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, render the variant(s), print where the files went."""
    parser = argparse.ArgumentParser(prog="python -m rtpcore.callgen", description=__doc__)
    parser.add_argument("--variant", default="inbound-proxy", help="variant name, or 'all' (one sub-folder each)")
    parser.add_argument("--out", required=True, help="output folder (created; files in it are overwritten)")
    parser.add_argument("--list", action="store_true", help="list the variants and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(VARIANTS))
        return 0
    names = list(VARIANTS) if args.variant == "all" else [args.variant]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; known: {', '.join(VARIANTS)}")
    for name in names:
        out = f"{args.out}/{name}" if args.variant == "all" else args.out
        truth = render(VARIANTS[name], out)
        print(f"{name}: {out}/{truth['sip']} + {len(truth['media'])} media file(s), "
              f"{truth['media_packets']} call media packets, {truth['background_packets']} background")
    return 0


if __name__ == "__main__":
    sys.exit(main())
