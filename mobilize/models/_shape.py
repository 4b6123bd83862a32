"""A network's shape as a dataclass that round-trips through a checkpoint's JSON-able config."""

from __future__ import annotations

from dataclasses import asdict


class ShapeConfig:
    """Mixin for the dataclasses that describe a network's shape (stored in every checkpoint).

    `from_dict` ignores keys it does not know, so a checkpoint written by a newer version with
    an extra field still loads (the field takes its default when it is missing)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})
