"""Run a TF.js graph model under Node with the npm @tensorflow/tfjs packages.

One Node process per session answers many requests (see js/run_tfjs.cjs), so evaluating a
data set does not pay Node's start-up per image. The npm packages live in
`<venv>/node/node_modules` (installed by `make`), or where MOBILIZE_NODE_MODULES points.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BadInput, ToolFailed
from .base import Runtime, Session, from_runtime, to_runtime

SCRIPT = Path(__file__).parent / "js" / "run_tfjs.cjs"
NPM_PACKAGES = "@tensorflow/tfjs@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0"


def node_modules_dir() -> Path:
    env = os.environ.get("MOBILIZE_NODE_MODULES")
    candidates = [Path(env)] if env else []
    candidates.append(Path(sys.prefix) / "node" / "node_modules")
    for c in candidates:
        if (c / "@tensorflow" / "tfjs").is_dir():
            return c
    raise BadInput(
        "running TF.js needs the npm packages @tensorflow/tfjs and @tensorflow/tfjs-backend-wasm",
        f"run `make setup`, or `npm install --prefix {Path(sys.prefix) / 'node'} {NPM_PACKAGES}`",
    )


def node_executable() -> str:
    node = shutil.which("node")
    if not node:
        raise BadInput("running TF.js needs Node.js (the `node` command)", "install Node.js 18 or newer")
    return node


def npm_package_version(package: str) -> str | None:
    try:
        meta = node_modules_dir() / package / "package.json"
        return json.loads(meta.read_text())["version"]
    except Exception:
        return None


class TFJSSession(Session):
    def __init__(self, model_json: Path, record, spec_outputs, backend: str = "wasm"):
        env = dict(os.environ, NODE_PATH=str(node_modules_dir()))
        self.proc = subprocess.Popen(
            [node_executable(), str(SCRIPT), str(model_json), backend],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.ready = self._read()
        if "error" in self.ready:
            raise ToolFailed(f"TF.js could not load {model_json.name}: {self.ready['error'].splitlines()[0]}")
        self.io = record.io
        self.spec_outputs = spec_outputs
        self.tmp = Path(tempfile.mkdtemp(prefix="mobilize-tfjs-"))
        self.last_ms: list[float] = []
        self.memory: dict = {}

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read().strip().splitlines()
            raise ToolFailed("the TF.js runner stopped: " + (err[-1] if err else "no output"))
        return json.loads(line)

    def run(self, inputs: Sequence[np.ndarray], repeat: int = 1) -> list[np.ndarray]:
        feeds = []
        for i, (e, x) in enumerate(zip(self.io["inputs"], inputs)):
            arr = to_runtime(x, e)
            f = self.tmp / f"in{i}.bin"
            arr.astype("<f4").tofile(f)
            feeds.append({"name": e["name"], "shape": list(arr.shape), "file": str(f)})
        request = {"inputs": feeds, "outputs": [e["name"] for e in self.io["outputs"]],
                   "out_dir": str(self.tmp), "repeat": repeat}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise ToolFailed(f"TF.js failed: {answer['error'].splitlines()[0]}")
        self.last_ms = answer.get("ms", [])
        self.memory = answer.get("memory", {})
        outs = []
        for o, e, s in zip(answer["outputs"], self.io["outputs"], self.spec_outputs):
            data = np.fromfile(o["file"], dtype="<f4")
            outs.append(from_runtime(data, e, s["shape"]))
        return outs

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


class TFJSRuntime(Runtime):
    name = "tfjs-node"
    target = "tfjs"

    def __init__(self, backend: str = "wasm"):
        self.backend = backend

    def version(self) -> str:
        v = npm_package_version("@tensorflow/tfjs")
        return f"{v} ({self.backend})" if v else ""

    def open(self, directory: Path, record, spec_inputs, spec_outputs, threads=None) -> Session:
        return TFJSSession(Path(directory) / record.io["model"], record, spec_outputs, self.backend)
