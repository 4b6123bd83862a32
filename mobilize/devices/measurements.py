"""Reading a team's own phone measurements: benchncnn's text output or {model: ms} JSON.

The input shapes of benchncnn's built-in list are the ones benchncnn.cpp feeds; two of its
param files (FastestDet, vision_transformer) do not state theirs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import BadInput
from .graph import declared_input_shapes, read_param

# ncnn [c, h, w] for benchncnn's default model list (benchmark/benchncnn.cpp)
BENCHNCNN_SHAPES = {
    "squeezenet": [3, 227, 227], "squeezenet_int8": [3, 227, 227], "alexnet": [3, 227, 227],
    "blazeface": [3, 128, 128],
    "squeezenet_ssd": [3, 300, 300], "squeezenet_ssd_int8": [3, 300, 300],
    "mobilenet_ssd": [3, 300, 300], "mobilenet_ssd_int8": [3, 300, 300],
    "mobilenet_yolo": [3, 416, 416], "yolov4-tiny": [3, 416, 416],
    "mobilenetv2_yolov3": [3, 352, 352], "yolo-fastestv2": [3, 352, 352], "FastestDet": [3, 352, 352],
    "nanodet_m": [3, 320, 320], "yolo-fastest-1.1": [3, 320, 320],
    "vision_transformer": [3, 384, 384],
}
DEFAULT_SHAPE = [3, 224, 224]

_LINE = re.compile(r"^\s*(\S+)\s+min\s*=\s*([\d.]+)\s+max\s*=\s*([\d.]+)\s+avg\s*=\s*([\d.]+)")
_CFG = re.compile(r"^\s*(loop_count|num_threads|powersave|gpu_device|cooling_down)\s*=\s*(-?\d+)")


def benchncnn_input_shapes(param: Path | str) -> dict[str, list[int]]:
    """The param file's own input shape, else benchncnn's for that model name, else 3x224x224."""
    param = Path(param)
    layers = read_param(param)
    declared = declared_input_shapes(layers)
    if declared:
        return declared
    inputs = [layer.tops[0] for layer in layers if layer.type == "Input"]
    shape = BENCHNCNN_SHAPES.get(param.stem, DEFAULT_SHAPE)
    return {name: list(shape) for name in inputs}


def read_measurements(path: Path | str) -> tuple[dict[str, float], dict]:
    """({model: ms}, config) from benchncnn's output (avg column) or a JSON object.

    JSON may be {model: ms} or {"latency_ms": {...}, "num_threads": n, ...}.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"--measurements '{path}' does not exist")
    text = path.read_text(errors="replace")
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise BadInput(f"--measurements '{path}' is not valid JSON: {e}") from e
        cfg = {k: v for k, v in data.items() if not isinstance(v, (int, float, dict))} if "latency_ms" in data else {}
        if "latency_ms" in data:
            cfg.update({k: v for k, v in data.items() if k != "latency_ms" and isinstance(v, (int, float))})
            data = data["latency_ms"]
        try:
            ms = {str(k): float(v) for k, v in data.items()}
        except (TypeError, ValueError) as e:
            raise BadInput(f"--measurements '{path}': expected {{model_name: milliseconds}}") from e
    else:
        ms, cfg = {}, {}
        for line in text.splitlines():
            m = _LINE.match(line)
            if m:
                ms[m.group(1)] = float(m.group(4))
                continue
            c = _CFG.match(line)
            if c:
                cfg[c.group(1)] = int(c.group(2))
        if not ms:
            raise BadInput(f"--measurements '{path}' holds no benchncnn result lines",
                           "expected lines like '  mobilenet_v2  min = 80.1  max = 83.0  avg = 82.0', or JSON")
    bad = [k for k, v in ms.items() if not v > 0]
    if bad:
        raise BadInput(f"--measurements: non-positive latency for {', '.join(bad)}")
    return ms, cfg
