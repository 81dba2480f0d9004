"""The one config style of topicrnn: a dataclass next to the code it configures, stored in checkpoints as a
plain dict (`to_dict`) and read back with `from_dict`, which drops keys it does not know, so a checkpoint
written by another version of a config still loads."""
from __future__ import annotations

from dataclasses import asdict, fields


class DictConfig:
    """Mixin for config dataclasses."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
