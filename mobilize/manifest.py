"""manifest.json: the contract between an artifact and the app that uses it.

It says how to feed the model (inputs, preprocessing), how to read it (outputs, labels, the
family's own metadata), and for each target which files to ship, the runtime's own tensor
names and layouts, and the proof that the artifact computes what the reference computes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "mobilize.manifest/1"
MANIFEST = "manifest.json"

OK, FAILED, UNSUPPORTED = "ok", "failed", "unsupported"


@dataclass
class FileRecord:
    path: str  # relative to the artifact directory
    bytes: int
    sha256: str


@dataclass
class TargetRecord:
    status: str = OK
    runtime: str | None = None
    precision: str | None = None
    files: list[FileRecord] = field(default_factory=list)
    io: dict = field(default_factory=dict)  # {"inputs": [...], "outputs": [...]}, spec order
    parity: dict | None = None
    error: str | None = None
    error_kind: str | None = None  # unsupported | tool | parity
    rewrites: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    variants: dict = field(default_factory=dict)  # e.g. tflite's fp16 by-product
    export_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK and (self.parity is None or self.parity.get("passed", False))

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: v for k, v in d.items() if v not in (None, [], {})} | {"status": self.status}

    @classmethod
    def from_dict(cls, d: dict) -> "TargetRecord":
        d = dict(d)
        d["files"] = [FileRecord(**f) for f in d.get("files", [])]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Manifest:
    name: str
    source: dict
    inputs: list[dict]
    outputs: list[dict]
    tools: dict = field(default_factory=dict)
    family: str | None = None
    preprocess: dict | None = None
    labels: list[str] | None = None
    metadata: dict = field(default_factory=dict)
    targets: dict[str, TargetRecord] = field(default_factory=dict)
    verification: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)  # latency checks, filled by `mobilize check`
    created_by: str = ""
    schema: str = SCHEMA
    location: Path | None = field(default=None, repr=False, compare=False)  # where it was written

    # -- queries ----------------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return bool(self.targets) and all(t.ok for t in self.targets.values())

    def exit_code(self) -> int:
        """0 when every target is ok; else the most severe: 3 tool, 2 unsupported, 1 parity."""
        from .errors import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_OK, EXIT_TOOL_FAILED

        worst = EXIT_OK
        for t in self.targets.values():
            if t.ok:
                continue
            code = {"unsupported": EXIT_BAD_INPUT, "tool": EXIT_TOOL_FAILED, "input": EXIT_BAD_INPUT}.get(
                t.error_kind or "", EXIT_CHECK_FAILED)
            worst = max(worst, code)
        return worst

    def target(self, name: str) -> TargetRecord:
        return self.targets[name]

    # -- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "schema": self.schema,
            "name": self.name,
            "family": self.family,
            "created_by": self.created_by,
            "source": self.source,
            "tools": self.tools,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "preprocess": self.preprocess,
            "labels": self.labels,
            "metadata": self.metadata,
            "verification": self.verification,
            "targets": {k: v.to_dict() for k, v in self.targets.items()},
        }
        if self.checks:
            d["checks"] = self.checks
        return {k: v for k, v in d.items() if v is not None}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def save(self, directory: Path) -> Path:
        path = Path(directory) / MANIFEST
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        return cls(
            schema=d.get("schema", SCHEMA),
            name=d["name"],
            family=d.get("family"),
            created_by=d.get("created_by", ""),
            source=d.get("source", {}),
            tools=d.get("tools", {}),
            inputs=d.get("inputs", []),
            outputs=d.get("outputs", []),
            preprocess=d.get("preprocess"),
            labels=d.get("labels"),
            metadata=d.get("metadata", {}),
            verification=d.get("verification", {}),
            targets={k: TargetRecord.from_dict(v) for k, v in d.get("targets", {}).items()},
            checks=d.get("checks", {}),
        )

    @classmethod
    def load(cls, directory: Path | str) -> "Manifest":
        from .errors import BadInput

        path = Path(directory)
        if path.is_dir():
            path = path / MANIFEST
        if not path.is_file():
            raise BadInput(f"'{directory}' is not a mobilize artifact (no {MANIFEST})")
        try:
            manifest = cls.from_dict(json.loads(path.read_text()))
            manifest.location = path.parent
            return manifest
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise BadInput(f"'{path}' is not a valid manifest: {e}") from e


def is_artifact(directory: Path) -> bool:
    return (Path(directory) / MANIFEST).is_file()
