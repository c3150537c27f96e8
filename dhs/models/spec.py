"""What a model is, without torch: its spec (arch, stamp size, stem, hybrid metadata, extra heads)
as checkpoints store it. The arch and stem names, and the metadata the hybrid may never see, are
defined once with the params schema (``dhs.params.schema.ARCHS``, ``STEMS``;
``dhs.params.rules.check_metadata_columns``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    stamp_size: int
    stem: str = "cifar"
    metadata: tuple[str, ...] = ()
    colour: bool = False       # host g-r, r-z measured from the stamp as extra inputs (dhs.models.heads)
    theta_head: bool = False   # second output regressing theta_E (dhs.models.heads)
    channels: int = 3          # input channels: 3 (g, r, z of one view) or 6 (raw and host-subtracted views: preprocess.input)

    def as_dict(self) -> dict:
        return {"arch": self.arch, "stamp_size": self.stamp_size, "stem": self.stem, "metadata": list(self.metadata),
                "colour": self.colour, "theta_head": self.theta_head, "channels": self.channels}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(arch=d["arch"], stamp_size=int(d["stamp_size"]), stem=d.get("stem", "cifar"), metadata=tuple(d.get("metadata", ())),
                   colour=bool(d.get("colour", False)), theta_head=bool(d.get("theta_head", False)),
                   channels=int(d.get("channels", 3)))
