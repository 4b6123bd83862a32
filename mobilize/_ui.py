"""Progress lines, progress bars and plain-text tables, all on stderr unless asked otherwise."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterable, Sequence


class Reporter:
    """Prints progress to stderr; quiet=True silences it (results still go to stdout)."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=self.stream, flush=True)

    @contextmanager
    def step(self, label: str):
        start = time.perf_counter()
        if not self.quiet:
            print(f"{label} ...", file=self.stream, flush=True)
        box = {"status": "done"}
        try:
            yield box
        except BaseException:
            box["status"] = "failed"
            raise
        finally:
            if not self.quiet:
                print(f"{label}: {box['status']} ({time.perf_counter() - start:.1f} s)", file=self.stream, flush=True)

    def bar(self, iterable: Iterable, total: int | None = None, desc: str = "", unit: str = "it", **kw):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=self.quiet, file=self.stream,
                    dynamic_ncols=True, leave=False, **kw)


SILENT = Reporter(quiet=True)


def table(rows: Sequence[Sequence], header: Sequence[str]) -> str:
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for k, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 or not _numeric(c) else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(c) -> str:
    if c is None:
        return "-"
    if isinstance(c, float):
        if c == 0:
            return "0"
        if abs(c) >= 1000 or abs(c) < 1e-3:
            return f"{c:.2e}"
        return f"{c:.4g}"
    return str(c)


def _numeric(s: str) -> bool:
    try:
        float(s.rstrip("%x"))
        return True
    except ValueError:
        return False


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
