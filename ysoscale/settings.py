"""Shared rule for every configuration dataclass: misspelled keys are named, not ignored."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any


def reject_unknown_keys(cls: type, values: Mapping[str, Any], what: str) -> None:
    """Raise a ValueError naming every key of ``values`` that is not a field of ``cls``.

    Examples
    --------
    >>> @dataclasses.dataclass
    ... class Example:
    ...     epochs: int = 1
    >>> reject_unknown_keys(Example, {"epoch": 3}, "training")
    Traceback (most recent call last):
    ValueError: unknown training setting(s) ['epoch'] (did you mean 'epochs'?); known: ['epochs']
    """
    known = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(str(key) for key in values if key not in known)
    if unknown:
        hints = [difflib.get_close_matches(key, known, n=1) for key in unknown]
        hint = ", ".join(repr(h[0]) for h in hints if h)
        suggestion = f" (did you mean {hint}?)" if hint else ""
        raise ValueError(f"unknown {what} setting(s) {unknown}{suggestion}; known: {known}")
