"""open_clip models as encoders: image vectors, and text vectors in the same space ("red summer dress" finds photos).

CLIP trains an image network and a text network together so that a photo and
its caption land close by. Any open_clip model works; its weights must
already be on this machine, because nothing here downloads at run time (a
cron build must not depend on a model hub being up). Two ways to give them:

* ``checkpoint``: a local weights file (``open_clip_pytorch_model.bin``,
  ``.safetensors`` or ``.pt``) for ``model``;
* ``pretrained``: a tag of open_clip's list (``laion2b_s34b_b79k``) whose file
  is already in the local Hugging Face cache (``HF_HOME``, by default
  ``~/.cache/huggingface``) or in open_clip's own cache (``~/.cache/clip``),
  put there once by ``huggingface-cli download`` on a machine with access.

``HF_HUB_OFFLINE=1`` is set before open_clip is imported, and the file is
looked up before open_clip is asked to load it, so a missing file is a clear
:class:`~models.encoder.EncoderError` saying how to provide one, never a hang
on the network.

Vectors are L2-normalised, as CLIP compares them by cosine. Images run
under bfloat16 autocast where the device computes it natively (the usual
way to serve CLIP); the input path (:mod:`models.torch_encoder`) takes the
model's own size, mean, deviation and filter from open_clip.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from models.encoder import EncoderError
from models.torch_encoder import InputSpec, Precision, TorchEncoder, default_device, native_bfloat16, pad_to_square

_HOW = (
    'provide the weights with visual.checkpoint = "/path/to/open_clip_pytorch_model.bin", or download them once '
    "where there is network access (huggingface-cli download <repo>) and copy the Hugging Face cache "
    "(~/.cache/huggingface, or $HF_HOME) to this machine"
)


def _open_clip():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import open_clip
    except ImportError as error:
        msg = f"the open_clip encoder needs the clip extra (open_clip_torch with torchvision): pip install -e '.[clip]' ({error})"
        raise EncoderError(msg) from None
    return open_clip


def resolve_weights(model: str, pretrained: str | None, checkpoint: str | os.PathLike | None) -> str | None:
    """What to pass open_clip as ``pretrained``: the checkpoint path, or a tag whose file is in a local cache.

    For ``hf-hub:`` and ``local-dir:`` models the name says where the weights
    are, and this returns None. A tag is passed on as a tag (not as its file)
    so that open_clip also applies the tag's own preprocessing.

    Raises:
        EncoderError: no weights were named, or the named ones are not on this machine.
    """
    open_clip = _open_clip()
    if model.startswith(("hf-hub:", "local-dir:")):
        if model.startswith("local-dir:") and not Path(model.split(":", 1)[1]).is_dir():
            msg = f"open_clip model folder {model.split(':', 1)[1]} does not exist"
            raise EncoderError(msg)
        return None
    if model not in open_clip.list_models():
        msg = f"open_clip has no model {model!r} (for example: {', '.join(open_clip.list_models()[:8])}, ...)"
        raise EncoderError(msg)
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            msg = f"open_clip checkpoint {checkpoint} does not exist; {_HOW}"
            raise EncoderError(msg)
        return str(checkpoint)
    if pretrained is None:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        msg = f"open_clip model {model!r} has no weights: set visual.pretrained (tags: {tags}) or visual.checkpoint; {_HOW}"
        raise EncoderError(msg)
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        msg = f"open_clip knows no pretrained tag {pretrained!r} for {model!r} (tags: {tags})"
        raise EncoderError(msg)
    found = _cached_file(cfg)
    if found is None:
        where = cfg.get("hf_hub") or cfg.get("url")
        msg = f"the weights of open_clip {model} {pretrained} ({where}) are not in the local caches; {_HOW}"
        raise EncoderError(msg)
    return pretrained


def _cached_file(cfg: dict) -> str | None:
    """The file of a pretrained config in the Hugging Face cache or open_clip's URL cache, without any network."""
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        if hub.endswith("/"):  # a repository with open_clip's default file names
            repo, names = hub.rstrip("/"), ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        else:
            repo, filename = os.path.split(hub)
            names = [filename]
            if filename.endswith((".bin", ".pth")):  # open_clip prefers a safetensors twin when there is one
                names.insert(0, filename.rsplit(".", 1)[0] + ".safetensors")
        for name in names:
            found = try_to_load_from_cache(repo_id=repo, filename=name)
            if isinstance(found, str):
                return found
    url = cfg.get("url", "")
    if url:
        candidate = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if candidate.is_file():
            return str(candidate)
    return None


class OpenClipEncoder(TorchEncoder):
    """Image and text vectors of an open_clip model (``dim`` is the model's embedding width), L2-normalised."""

    def __init__(
        self,
        model: str = "ViT-B-32",
        *,
        pretrained: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        device: str | None = None,
        precision: Precision | None = None,
    ) -> None:
        open_clip = _open_clip()
        weights = resolve_weights(model, pretrained, checkpoint)
        self.device = torch.device(device or default_device())
        self.precision = precision or ("bfloat16" if native_bfloat16(self.device) else "float32")
        try:
            network, _, transform = open_clip.create_model_and_transforms(
                model, pretrained=weights, device=self.device, weights_only=True
            )
            self.tokenizer = open_clip.get_tokenizer(model)
        except Exception as error:  # noqa: BLE001 - open_clip raises RuntimeError, FileNotFoundError, KeyError... for bad files
            msg = f"open_clip could not load {model} from {weights or model}: {error}; {_HOW}"
            raise EncoderError(msg) from None
        self.network = network.eval()
        self.transform = transform
        self.input = _input_spec(open_clip.get_model_preprocess_cfg(network), model)
        with torch.inference_mode():
            self.dim = int(self.network.encode_text(self.tokenizer(["a"]).to(self.device)).shape[1])
        self.model_id = f"open_clip:{model}:{_weights_tag(model, pretrained, checkpoint, weights)}:pad-white"

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(pad_to_square(image))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16"):
            features = self.network.encode_image(batch)
        return torch.nn.functional.normalize(features.float(), dim=-1)  # in float32: unit length to 1e-7, not 1e-3

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised row per text, comparable with image vectors by cosine (Annoy's angular metric)."""
        with torch.inference_mode():
            vectors = self.network.encode_text(self.tokenizer(list(texts)).to(self.device), normalize=True)
        return vectors.float().cpu().numpy()


def _input_spec(cfg: dict, model: str) -> InputSpec:
    """The model's preprocessing from open_clip's config: square size, mean, deviation and resizing filter.

    Raises:
        EncoderError: the model takes a picture that is not square (the white padding assumes one).
    """
    size = cfg.get("size", 224)
    height, width = (size, size) if isinstance(size, int) else size
    if height != width:
        msg = f"open_clip model {model} takes {width} x {height} pictures; only square inputs are supported"
        raise EncoderError(msg)
    interpolation: Literal["bicubic", "bilinear"] = (
        "bilinear" if cfg.get("interpolation") == "bilinear" else "bicubic"
    )  # open_clip's own default
    return InputSpec(int(height), tuple(cfg["mean"]), tuple(cfg["std"]), interpolation)


def _weights_tag(model: str, pretrained: str | None, checkpoint: str | os.PathLike | None, weights: str | None) -> str:
    """What names the weights in ``model_id``: a checkpoint (which wins over ``pretrained``) by its file name and
    the start of its sha256, so that a retrained file under the same name never shares cached vectors."""
    if checkpoint:
        from models.embeddings import file_sha256

        return f"{Path(checkpoint).name}-{file_sha256(checkpoint)[:8]}"
    return pretrained or (Path(weights).name if weights else model)
