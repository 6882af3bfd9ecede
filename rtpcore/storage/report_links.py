"""report.html as stored in S3: its relative links (pcaps, report.md, WAVs) become the presigned URLs of the objects.

A presigned URL opens one object only; a page opened through one cannot follow relative links into a private
bucket. The local report keeps its relative links (they work on disk and through `rtphelper serve`).
"""
from __future__ import annotations

import html
import re
from collections.abc import Mapping
from pathlib import PurePosixPath

# href="…" / src="…" attributes whose value is a plain relative path (no scheme, query, fragment or data: URL)
_LINK = re.compile(r'(?<![\w:-])(href|src)="([^":?#]+)"')


def presign_links(page: str, base: str, urls: Mapping[str, str]) -> tuple[str, list[str]]:
    """The page with each relative link under `base` (e.g. "combined") replaced by its presigned URL; and the
    relative links no uploaded object answers (left as they are)."""
    missing: list[str] = []

    def swap(match: re.Match[str]) -> str:
        target = html.unescape(match.group(2))
        key = (PurePosixPath(base) / target).as_posix()
        url = urls.get(key)
        if url is None:
            missing.append(key)
            return match.group(0)
        return f'{match.group(1)}="{html.escape(url, quote=True)}"'

    return _LINK.sub(swap, page), missing
