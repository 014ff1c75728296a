"""Install motion attention processors on a denoiser for the duration of a ``with`` block, then restore it.

The model a caller holds is never left patched: originals are put back in ``finally``, so an exception or a
Cancel (ComfyUI raises a ``BaseException``) in the middle of training or sampling leaves the base model
exactly as it was.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping

from torch import nn

from .families.unet3d_layers import build_processors  # the UNet3D builder, kept importable here

__all__ = ["build_processors", "installed_processors"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def installed_processors(denoiser: nn.Module, processors: Mapping[str, nn.Module]) -> Iterator[None]:
    """Set ``processors`` (attention module name -> processor) on ``denoiser`` and restore the originals on exit."""
    modules = dict(denoiser.named_modules())
    originals = {name: modules[name].processor for name in processors}
    try:
        for name, processor in processors.items():
            modules[name].set_processor(processor)
        yield
    finally:
        for name, original in originals.items():
            modules[name].set_processor(original)
