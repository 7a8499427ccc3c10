"""The engine's statistics, read with the package's own parser
(:class:`pipetls.EngineStats`): a stats file (``PIPETLS_STATS``) holds one
block per engine unload, each starting at ``pipetls.stats <format>``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Union

from pipetls import EngineStats


def parse_blocks(text: str) -> List[EngineStats]:
    """One EngineStats per ``pipetls.stats`` block of ``text``; a line
    before the first block, or one that is not ``key value``, is an error
    (ValueError)."""
    blocks: List[List[str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"not a stats line: {raw!r}")
        if parts[0] == "pipetls.stats":
            blocks.append([])
        elif not blocks:
            raise ValueError(f"stats line before 'pipetls.stats': {raw!r}")
        blocks[-1].append(line)
    out = []
    for lines in blocks:
        st = EngineStats.parse("\n".join(lines))
        bad = {k: v for k, v in st.extra.items() if not isinstance(v, int)}
        if bad:
            raise ValueError(f"stats values that are not integers: {bad}")
        out.append(st)
    return out


def read_stats_file(path: Union[str, os.PathLike]) -> List[EngineStats]:
    """The stats blocks appended to ``path``; [] if it does not exist."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return parse_blocks(text)
