"""The ``image`` space: NCHW images in a box, whose adversarials are checked as 8-bit PNGs.

:class:`ImageSpace` is the core's :class:`~mmargin.plugin.ContinuousSpace` plus ``saved``:
what the plugin's report hook does with each flip once the search is done (``"repair"``,
the default: re-classify it as an 8-bit PNG holds it and, when the flip is lost, find the
smallest 8-bit version that still flips; ``"check"``: re-classify only; ``"off"``). Only
images in ``[0, 1]`` are checked (what an 8-bit file maps to). ``l0`` counts pixels in
this space (:meth:`ImageSpace.distance_for`); ``l0_channels`` counts channel values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmargin.plugin import ContinuousSpace

SAVED = ("repair", "check", "off")


@dataclass
class ImageSpace(ContinuousSpace):
    """NCHW images in ``[lower, upper]``; ``saved`` is one of :data:`SAVED`."""

    saved: str = "repair"

    def __post_init__(self) -> None:
        if self.saved not in SAVED:
            raise ValueError(f"saved: expected one of {', '.join(SAVED)}, got {self.saved!r}")

    def distance_for(self, distance: Any) -> Any:
        """L0 counts pixels here (every channel of a pixel once); ``l0_channels`` counts
        channel values; other distances are used as they are."""
        from mmargin.plugin import pixel_l0

        return pixel_l0(distance)

    @property
    def checks_png8(self) -> bool:
        """Whether flips are re-checked as 8-bit PNGs (on, and the box is [0, 1])."""
        return self.saved != "off" and (self.lower, self.upper) == (0.0, 1.0)
