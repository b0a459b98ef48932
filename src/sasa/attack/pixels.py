"""An image in the model's own input layout, in 0-255 units, and the exact map to ``pixel_values``.

An attack on the pixels must go through the model's image processor, which is not differentiable
(PIL resizing).  Every processor sasa supports resizes (and crops, tiles or patchifies) first and
then rescales and normalises, an affine map per channel.  So the attack works on the *resized*
image in the processor's own layout (``do_rescale=False, do_normalize=False``), in 0-255 units,
and the rest is ``pixel_values = raw * scale + shift`` with ``scale`` and ``shift`` read off two
constant images of the same size (a resized constant image is that constant).  On the clean image
this equals the processor's output (checked on construction); an attacked image is the raw tensor
itself, rounded to whole 0-255 values as a real 8-bit image would be.

Qwen2-VL and Qwen2.5-VL repeat every image over ``temporal_patch_size`` frames inside each
flattened patch (``AdapterSpec.temporal_patches``): :meth:`PixelSpace.tie` keeps those copies
equal, so the attacked tensor is still one image.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from PIL import Image

from sasa.models.adapters import Adapter


class PixelSpaceError(ValueError):
    """The processor is not a resize followed by a per-channel affine map (the attack cannot use it)."""


def _image_processor(adapter: Adapter) -> Any:
    ip = getattr(adapter.processor, "image_processor", None)
    if ip is None:
        raise PixelSpaceError(f"{adapter.spec.model_type}: the processor has no image processor (a text-only model?)")
    return ip


def _pixels(adapter: Adapter, images: Sequence[Image.Image], **kw: Any) -> torch.Tensor:
    ip = _image_processor(adapter)
    batch = [[img] for img in images] if adapter.spec.nested_images else list(images)
    return ip(images=batch, return_tensors="pt", **kw)["pixel_values"].float()


class PixelSpace:
    """A batch of images as one raw tensor (0-255, the processor's layout) with its affine map.

    ``inputs`` are the model inputs for ``prompts`` with these images (the processor's own);
    :meth:`inputs_for` gives the same inputs with ``pixel_values`` made from a raw tensor."""

    def __init__(self, adapter: Adapter, prompts: Sequence[str], images: Sequence[Image.Image],
                 atol: float = 1e-4) -> None:
        if not adapter.spec.takes_images:
            raise PixelSpaceError(f"{adapter.spec.model_type} is a text-only model: there are no pixels to attack")
        images = [img.convert("RGB") for img in images]
        self.adapter, self.prompts = adapter, list(prompts)
        self.inputs = adapter.encode(self.prompts, images)
        device = self.inputs["pixel_values"].device  # the model's: the attack's arithmetic runs there
        self.raw = _pixels(adapter, images, do_rescale=False, do_normalize=False).to(device)
        lo = _pixels(adapter, [Image.new("RGB", img.size, (0, 0, 0)) for img in images]).to(device)
        hi = _pixels(adapter, [Image.new("RGB", img.size, (255, 255, 255)) for img in images]).to(device)
        if not (lo.shape == hi.shape == self.raw.shape):
            raise PixelSpaceError(f"{adapter.spec.model_type}: the processor's layout depends on the image content "
                                  f"({tuple(self.raw.shape)} vs {tuple(lo.shape)}); the attack needs a fixed layout")
        self.scale, self.shift = (hi - lo) / 255.0, lo
        self.temporal = 0
        if adapter.spec.temporal_patches:
            ip = _image_processor(adapter)
            self.temporal = int(ip.temporal_patch_size)
        clean = self.pixel_values(self.raw)
        given = self.inputs["pixel_values"].float()
        if clean.shape != given.shape or not torch.allclose(clean, given, atol=atol, rtol=0):
            err = (clean - given).abs().max().item() if clean.shape == given.shape else float("nan")
            raise PixelSpaceError(f"{adapter.spec.model_type}: rescaling and normalising the resized image as tensor "
                                  f"ops does not give the processor's pixel_values (max error {err:.3g})")

    def pixel_values(self, raw: torch.Tensor) -> torch.Tensor:
        """The processor's output for the resized image ``raw`` (differentiable)."""
        return raw * self.scale + self.shift

    def inputs_for(self, raw: torch.Tensor, inputs: dict | None = None) -> dict:
        """``inputs`` (default: the prompts' own) with ``pixel_values`` made from ``raw``."""
        inputs = self.inputs if inputs is None else inputs
        given = inputs["pixel_values"]
        return {**inputs, "pixel_values": self.pixel_values(raw).to(given.device, given.dtype)}

    def tie(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (the raw layout) with each pixel's temporal copies replaced by their mean."""
        if not self.temporal:
            return x
        n, width = x.shape
        view = x.reshape(n, 3, self.temporal, width // (3 * self.temporal))
        return view.mean(2, keepdim=True).expand_as(view).reshape(n, width)

    @staticmethod
    def to_image(raw: torch.Tensor) -> Image.Image | None:
        """One resized image's raw tensor as a PIL image, where its layout is ``[1, 3, H, W]`` (else None)."""
        if raw.ndim != 4 or raw.shape[:2] != (1, 3):
            return None
        array = raw[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(array)
