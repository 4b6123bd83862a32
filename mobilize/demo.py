"""`mobilize demo`: run what exists, end to end, on embedded data, anywhere.

Stage one exports the built-in example network to every target and prints the verification
table. Each model family adds its own stage (train on its synthetic data, export, evaluate)
through `Family.demo`.
"""

from __future__ import annotations

import time
from pathlib import Path

from ._ui import Reporter


def export_stage(workdir: Path, reporter: Reporter) -> dict:
    from ._export import export
    from .commands._output import verification_table
    from .models.zoo import example_network

    manifest = export(example_network(), "all", workdir / "example", reporter=reporter)
    return {"title": "export: example network (MobileNetV2-style, 1x3x64x64) to every target",
            "table": verification_table(manifest), "ok": manifest.ok,
            "artifact": str(manifest.location) if manifest.location else None}


def run_demo(out: str | Path = "mobilize-demo", only: list[str] | None = None,
             reporter: Reporter | None = None) -> list[dict]:
    from .models import list_families

    reporter = reporter or Reporter()
    workdir = Path(out)
    workdir.mkdir(parents=True, exist_ok=True)
    stages = [("export", export_stage)]
    stages += [(f.name, f.demo) for f in sorted(list_families(), key=lambda f: f.demo_order) if f.demo]
    results = []
    for name, fn in stages:
        if only and name not in only:
            continue
        reporter(f"== demo stage: {name}")
        start = time.perf_counter()
        result = fn(workdir / name if name != "export" else workdir, reporter)
        result.setdefault("stage", name)
        result["seconds"] = round(time.perf_counter() - start, 1)
        results.append(result)
    return results
