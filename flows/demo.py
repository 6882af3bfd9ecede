"""`make demo`: generate a call through an SBC and run the correlate-call flow on it, with local storage."""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import tasks.runtime  # noqa: F401  (process defaults before prefect loads)
from rtpcore.callgen import render, variant
from rtpcore.report import format_text

DEMO_ROOT = Path("demo-output")
# A B2BUA call (two Call-IDs), SRTP on both legs, media in rolling chunks, with background traffic.
DEMO_SPEC = variant("inbound-b2bua", core_suite="AES_CM_128_HMAC_SHA1_80", rolling_packets=900)


def main() -> int:
    call_dir = DEMO_ROOT / "call"
    out_dir = DEMO_ROOT / "session"
    for d in (call_dir, out_dir):
        if d.exists():
            print(f"demo: replacing the previous demo run in {d}")
            shutil.rmtree(d)
    truth: dict[str, Any] = dict(render(DEMO_SPEC, call_dir))
    print(f"demo: generated {call_dir / truth['sip']} and {len(truth['media'])} raw media chunks in {call_dir / 'media'}")
    from flows.correlate_call import correlate_call

    started = time.monotonic()
    state = correlate_call(
        sip_pcap=str(call_dir / truth["sip"]), direction="inbound" if truth["direction"] == "inbound" else "outbound",
        media=[str(call_dir / "media")], output_folder=str(out_dir), return_state=True,
    )
    result = state.result()  # the report (raises when the run failed)
    assert isinstance(result, dict), result
    if state.message:
        print(f"demo: {state.message}")
    print(format_text(result))
    print(f"demo: correlate-call flow run took {time.monotonic() - started:.1f} s")
    (DEMO_ROOT / "report.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
