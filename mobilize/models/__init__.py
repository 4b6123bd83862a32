"""Model families and the reference zoo. See `_registry.py` for how a family plugs in."""

from ._registry import Family, get_family, list_families, register_family

__all__ = ["Family", "get_family", "list_families", "register_family"]
