"""What every stage's config (a frozen, framework-free dataclass) does with dicts: it is built from one that may hold
keys it does not know (metadata written by other tools, newer fields), and written as plain JSON values."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


class StageConfig:
    """Mixin for the stage config dataclasses; each normalises its own field types (lists -> tuples) in
    __post_init__, so from_dict(to_dict()) gives back an equal config."""

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]):
        """Build from a mapping, dropping keys this config does not know."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})

    def to_dict(self) -> dict:
        """Field values as JSON has them: tuples become lists."""
        return {k: _lists(v) for k, v in dataclasses.asdict(self).items()}


def _lists(value: Any) -> Any:
    return [_lists(v) for v in value] if isinstance(value, (tuple, list)) else value
