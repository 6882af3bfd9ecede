#!/usr/bin/env python3
"""Check every rpcapd host in hosts.yaml (reachable, auth, interfaces, local libpcap): same as `rtphelper diagnose`."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from rtpcore.cli import main  # noqa: E402 - after the path fix


if __name__ == "__main__":
    sys.exit(main(["diagnose", *sys.argv[1:]]))
