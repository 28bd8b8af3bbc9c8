"""AI prices: what the orchestrator quotes per (capability, model) in GetOrchestrator.

Prices come from the workers' ``-aiModels`` entries (farm.ai.config: ``price_per_unit`` wei per
``pixels_per_unit`` units, as go-livepeer's orchestrator takes them), read from the heartbeats
of the live workers. Where two workers price one model differently the higher price is quoted,
so no worker works below its operator's price. A price in another currency needs a price feed
this node does not have: such an entry is left unpriced, and on chain its model is not
served to gateways.

OrchestratorInfo carries every price in ``capabilities_prices`` (PriceInfo with the capability
and, as ``constraint``, the model id); a gateway that asks GetOrchestrator for AI capabilities
with model constraints is quoted, in ``price_info``, the sum of the prices of the models it
asked for, as go-livepeer does, and its ticket params are issued at that price.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, Final

from chain import pm_pb2
from chain.payment import price_to_net
from farm.golivepeer import net_pb2
from farm.registry import Capabilities

__all__ = ["AI_CAPABILITY_PIPELINES", "ai_price_infos", "model_prices", "quoted_price"]

log = logging.getLogger(__name__)

#: go-livepeer's capability ids of the AI pipelines (core/capabilities.go).
AI_CAPABILITY_PIPELINES: Final = {
    27: "text-to-image",
    28: "image-to-image",
    29: "image-to-video",
    30: "upscale",
    31: "audio-to-text",
    32: "segment-anything-2",
    33: "llm",
    34: "image-to-text",
    35: "live-video-to-video",
    36: "text-to-speech",
}
_PIPELINE_CAPABILITY: Final = {v: k for k, v in AI_CAPABILITY_PIPELINES.items()}
_WEI: Final = frozenset({"", "WEI"})


def _number(value: Any) -> Fraction | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Fraction(value)
    try:
        return Fraction(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return None


def entry_price(entry: Mapping[str, Any]) -> Fraction | None:
    """Wei per unit of one ``-aiModels`` entry; None when it has no usable price."""
    if str(entry.get("currency") or "").upper() not in _WEI:
        log.debug(
            "%s %s is priced in %s: no price feed here, left unpriced",
            entry.get("pipeline"),
            entry.get("model_id"),
            entry.get("currency"),
        )
        return None
    per_unit = _number(entry.get("price_per_unit", 0))
    pixels = _number(entry.get("pixels_per_unit", 1))
    if per_unit is None or pixels is None or per_unit < 0 or pixels <= 0:
        return None
    return per_unit / pixels


def model_prices(live: Iterable[Capabilities]) -> dict[tuple[str, str], Fraction]:
    """Wei per unit for each (pipeline, model) the live workers serve and price."""
    prices: dict[tuple[str, str], Fraction] = {}
    for w in live:
        for entry in w.ai_models:
            key = (str(entry.get("pipeline", "")), str(entry.get("model_id", "")))
            price = entry_price(entry)
            if price is not None and key[0] in _PIPELINE_CAPABILITY:
                prices[key] = max(price, prices.get(key, Fraction(0)))
    return prices


def ai_price_infos(live: Iterable[Capabilities]) -> list[pm_pb2.PriceInfo]:
    """``capabilities_prices``: one PriceInfo per priced (capability, model)."""
    out = []
    for (pipeline, model), price in sorted(model_prices(live).items()):
        try:
            out.append(price_to_net(price, _PIPELINE_CAPABILITY[pipeline], model))
        except ValueError as e:  # a price whose fraction does not fit int64
            log.warning("%s %s: %s", pipeline, model, e)
    return out


def quoted_price(caps: net_pb2.Capabilities, live: Iterable[Capabilities]) -> Fraction | None:
    """The price for a GetOrchestrator that asked for ``caps``: the sum of the prices of the
    AI models it names; None when it names none this node prices."""
    prices = model_prices(live)
    total, named = Fraction(0), False
    for cap, constraints in caps.constraints.PerCapability.items():
        pipeline = AI_CAPABILITY_PIPELINES.get(cap)
        for model in constraints.models:
            price = prices.get((pipeline or "", model))
            if price is not None:
                total, named = total + price, True
    return total if named else None
