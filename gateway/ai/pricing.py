"""AI prices: Livepeer's units per pipeline and per-(pipeline, model) prices.

A job costs ``units x price_per_unit / pixels_per_unit`` credits, rounded up. The units are
go-livepeer's (``server/ai_process.go``):

============================================  =============================================
pipeline                                      units
============================================  =============================================
text-to-image                                 height x width x images (512 x 512 if unset)
image-to-image                                input width x height x images
image-to-video                                height x width x 25 frames
upscale, segment-anything-2, image-to-text    input width x height
audio-to-text                                 milliseconds of audio (seconds x 1000)
llm                                           max_tokens
text-to-speech                                1000 x characters of ``text``
============================================  =============================================

Text-to-speech: go-livepeer's gateway pays for ``len(text)`` bytes while its orchestrator
debits 1000 x runes. This gateway charges the orchestrator's unit, 1000 x Unicode characters,
so one price means the same on both sides and a non-ASCII text costs what it is debited.
Audio is counted in whole milliseconds, rounded up (go-livepeer truncates to whole seconds
first, and refuses audio shorter than one).

Prices come in go-livepeer's ``-maxPricePerCapability`` shape,
``{"capabilities_prices": [{"pipeline", "model_id", "price_per_unit", "pixels_per_unit"}]}``,
looked up by the model, then the pipeline's ``"default"`` entry, then the global price.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.ai.media import MediaInfo
from gateway.pricing import Price, charge

__all__ = ["Bill", "CapabilityPrice", "CapabilityPrices", "Price", "PriceTable", "ai_units"]

#: go-livepeer prices image-to-video as 25 frames, whatever the request asks.
VIDEO_FRAMES = 25
#: The pipeline's own entry in a price list, for models not listed by name.
DEFAULT_MODEL = "default"


@dataclass(frozen=True, slots=True)
class Bill:
    """One request's units, the price applied to them and the credits they cost."""

    units: int
    price: Price
    cost: int


class CapabilityPrice(BaseModel):
    """One entry of ``capabilities_prices``."""

    model_config = ConfigDict(extra="forbid")
    pipeline: str = Field(min_length=1)
    model_id: str = DEFAULT_MODEL
    price_per_unit: int = Field(ge=0)
    pixels_per_unit: int = Field(1, ge=1)
    #: Credits (the ledger's unit) only: there is no price feed to convert USD here.
    currency: str = ""

    @field_validator("currency")
    @classmethod
    def _credits_only(cls, v: str) -> str:
        if v.upper() not in ("", "WEI", "CREDITS"):
            raise ValueError(f"currency {v!r} needs a price feed; give prices in credits")
        return v


class CapabilityPrices(BaseModel):
    """go-livepeer's ``-maxPricePerCapability`` JSON document."""

    model_config = ConfigDict(extra="forbid")
    capabilities_prices: list[CapabilityPrice] = Field(default_factory=list)


class PriceTable:
    """Per-(pipeline, model) prices with the pipeline's default and a global fallback."""

    def __init__(self, prices: CapabilityPrices, fallback: Price = (0, 1)) -> None:
        self.fallback = fallback
        self._prices: dict[tuple[str, str], Price] = {
            (p.pipeline, p.model_id): (p.price_per_unit, p.pixels_per_unit)
            for p in prices.capabilities_prices
        }

    def price(self, pipeline: str, model_id: str) -> Price:
        """The model's price, else the pipeline's ``default`` price, else the global one."""
        return (
            self._prices.get((pipeline, model_id))
            or self._prices.get((pipeline, DEFAULT_MODEL))
            or self.fallback
        )

    def bill(self, pipeline: str, model_id: str, units: int) -> Bill:
        """What ``units`` of the pipeline's work on the model cost."""
        price = self.price(pipeline, model_id)
        return Bill(units, price, charge(units, *price))


def ai_units(pipeline: str, params: Mapping[str, Any], media: MediaInfo) -> int:
    """Livepeer's billing units of one request (the table in this module's docstring)."""
    match pipeline:
        case "text-to-image":
            return int(params["height"]) * int(params["width"]) * _images(params)
        case "image-to-image":
            return media.width * media.height * _images(params)
        case "image-to-video":
            return int(params["height"]) * int(params["width"]) * VIDEO_FRAMES
        case "upscale" | "segment-anything-2" | "image-to-text":
            return media.width * media.height
        case "audio-to-text":
            return math.ceil(media.seconds * 1000)
        case "llm":
            return int(params["max_tokens"])
        case "text-to-speech":
            return 1000 * len(str(params["text"]))
    raise ValueError(f"no units for pipeline {pipeline!r}")


def _images(params: Mapping[str, Any]) -> int:
    return max(1, int(params.get("num_images_per_prompt", 1)))
