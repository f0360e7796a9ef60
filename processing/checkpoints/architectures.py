"""The upstream network architectures (torch), built from their own classes and loaded
from explicit paths: what the build exports and what the reference backend runs.

Loading goes through ``torch.load(weights_only=True)`` on a file that weights.py has
verified; facexlib's own ``init_*_model`` helpers are bypassed because they download
missing files into the working directory.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from . import compat  # noqa: F401  (must run before gfpgan/basicsr are imported)

import torch
from basicsr.archs.rrdbnet_arch import RRDBNet
from facexlib.detection.retinaface import RetinaFace
from facexlib.parsing.parsenet import ParseNet
from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean


def new_gfpgan() -> GFPGANv1Clean:
    # The configuration GFPGANer uses for v1.2-v1.4 ("clean" architecture).
    return GFPGANv1Clean(
        out_size=512,
        num_style_feat=512,
        channel_multiplier=2,
        decoder_load_path=None,
        fix_decoder=False,
        num_mlp=8,
        input_is_latent=True,
        different_w=True,
        narrow=1,
        sft_half=True,
    )


def new_detector() -> RetinaFace:
    with warnings.catch_warnings():
        # facexlib still passes torchvision's deprecated `pretrained=False`; harmless.
        warnings.simplefilter("ignore", UserWarning)
        return RetinaFace(network_name="resnet50", half=False, device=torch.device("cpu"))


def new_parser() -> ParseNet:
    return ParseNet(in_size=512, out_size=512, parsing_ch=19)


def new_realesrgan_x2() -> RRDBNet:
    # RealESRGAN_x2plus's architecture, as Real-ESRGAN's inference script builds it.
    return RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=2)


def _state_dict(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def load_gfpgan(path: Path) -> GFPGANv1Clean:
    checkpoint = _state_dict(path)
    net = new_gfpgan()
    net.load_state_dict(checkpoint["params_ema" if "params_ema" in checkpoint else "params"], strict=True)
    return net.eval()


def load_detector(path: Path) -> RetinaFace:
    state = {key.removeprefix("module."): value for key, value in _state_dict(path).items()}
    net = new_detector()
    net.load_state_dict(state, strict=True)
    return net.eval()


def load_parser(path: Path) -> ParseNet:
    net = new_parser()
    net.load_state_dict(_state_dict(path), strict=True)
    return net.eval()


def load_realesrgan(path: Path) -> RRDBNet:
    checkpoint = _state_dict(path)
    net = new_realesrgan_x2()
    net.load_state_dict(checkpoint.get("params_ema", checkpoint.get("params", checkpoint)), strict=True)
    return net.eval()


# -- GFPGAN's noise as an input -----------------------------------------------------
#
# GFPGANv1Clean's StyleGAN2 decoder adds per-layer Gaussian noise. Upstream draws it
# inside the forward (``randomize_noise=True``, torch's generator) or uses stored buffers
# (``randomize_noise=False``). Both backends here instead take it as an input, drawn by
# ``engine.networks.gfpgan_noise`` from a seed: the same distribution as upstream, reproducible,
# identical across backends, and the exact same numbers can be handed to the stock
# pipeline when comparing outputs.


def forward_with_noise(net: GFPGANv1Clean, x: torch.Tensor, noise) -> torch.Tensor:
    """``net(x, return_rgb=False)[0]`` with the decoder's noise given rather than drawn.

    The decoder's own ``forward`` is wrapped for the duration of the call (upstream's
    GFPGANv1Clean.forward does not pass ``noise`` through), so the math is upstream's."""
    decoder = net.stylegan_decoder
    tensors = [n if isinstance(n, torch.Tensor) else torch.from_numpy(n) for n in noise]
    original = type(decoder).forward

    def with_noise(styles, conditions, **kwargs):
        kwargs.update(noise=tensors, randomize_noise=False)
        return original(decoder, styles, conditions, **kwargs)

    decoder.forward = with_noise
    try:
        return net(x, return_rgb=False)[0]
    finally:
        del decoder.forward


class NoiseFedGFPGAN(torch.nn.Module):
    """GFPGANv1Clean with the noise as inputs: what is exported to ONNX."""

    def __init__(self, net: GFPGANv1Clean):
        super().__init__()
        self.net = net

    def forward(self, x, *noise):
        return forward_with_noise(self.net, x, noise)


class ParsingOnly(torch.nn.Module):
    """ParseNet's parsing logits (its image head is unused by the paste-back mask)."""

    def __init__(self, net: ParseNet):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)[0]
