"""DeepCAC2's calcium network and its weights file (``vivid-haze-6_model.pt``).

The published weights are a bare ``state_dict``: loading them needs a module tree whose
parameter names and shapes are exactly the published ones. The network is a plain 3D U-Net
(MHub ``models/deepcac2/src/model.py``): four levels of 64/128/256/512 features, a 1024-feature
bottleneck, blocks of two 3x3x3 convolutions without bias, each followed by BatchNorm and ReLU,
max-pooling down, transposed convolutions up, the skip connection concatenated *before* the
up-sampled features, and a 1x1x1 output convolution (a sigmoid makes it a probability).

Names follow from the attribute layout: ``downs.N.conv.{0,1,3,4}.*`` (conv, BN, ReLU, conv, BN,
ReLU), ``ups.2k`` (ConvTranspose3d) and ``ups.2k+1.conv.*``, ``bottleneck.conv.*``,
``final_conv.*``. Nothing here downloads anything: the file is the user's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .card import ModelError, sha256_file
from .deepcac2_weights import WEIGHTS_FILE, missing_message

#: Feature widths of the published network's four levels (the bottleneck has twice the last).
PUBLISHED_FEATURES: tuple[int, ...] = (64, 128, 256, 512)


class DoubleConv(nn.Module):
    """Two 3x3x3 convolutions without bias, each followed by BatchNorm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UNet3D(nn.Module):
    """DeepCAC2's 3D U-Net; ``features`` other than the published ones only for tests and benchmarks."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1,
                 features: Sequence[int] = PUBLISHED_FEATURES) -> None:
        super().__init__()
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.pool = nn.MaxPool3d(kernel_size=2, stride=2)
        channels = in_channels
        for width in features:
            self.downs.append(DoubleConv(channels, width))
            channels = width
        for width in reversed(features):
            self.ups.append(nn.ConvTranspose3d(width * 2, width, kernel_size=2, stride=2))
            self.ups.append(DoubleConv(width * 2, width))
        self.bottleneck = DoubleConv(features[-1], features[-1] * 2)
        self.final_conv = nn.Conv3d(features[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for index, skip in zip(range(0, len(self.ups), 2), reversed(skips)):
            x = self.ups[index](x)
            x = self.ups[index + 1](torch.cat((skip, x), dim=1))
        return self.final_conv(x)


def check_state(state: Any, network: nn.Module, path: Path) -> None:
    """Same parameter names and shapes as the network, or a :class:`ModelError` that lists the differences."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} is not a plain state dict of tensors (expected DeepCAC2's {WEIGHTS_FILE}: "
                         "keys downs.*, ups.*, bottleneck.*, final_conv.*)")
    expected = {name: tuple(t.shape) for name, t in network.state_dict().items()}
    missing = [k for k in expected if k not in state]  # in the network's order: the first difference first
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} (expected {expected[k]})"
              for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or shapes:
        parts = [f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}"
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
                 if items]
        raise ModelError(f"{path} does not match DeepCAC2's 3D U-Net (features {list(_features_of(network))}): "
                         + "; ".join(parts))


def load_network(path: Path, features: Sequence[int] = PUBLISHED_FEATURES,
                 sha256: str = "") -> tuple[UNet3D, str]:
    """The network with the file's weights, in eval mode on the CPU, and the file's sha256.

    ``sha256`` (optional) pins the file: another file is refused before it is read. The file is
    read with ``weights_only=True``: a state dict never needs to run pickled code.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(missing_message(path))
    digest = sha256_file(path)
    if sha256 and digest != sha256.lower():
        raise ModelError(f"sha256 mismatch for {path}: expected {sha256.lower()}, got {digest}; "
                         f"not the {WEIGHTS_FILE} this configuration pins")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same user error
        raise ModelError(f"{path} cannot be read as a state dict ({type(error).__name__}); "
                         f"expected DeepCAC2's {WEIGHTS_FILE}") from None
    network = UNet3D(1, 1, features)
    check_state(state, network, path)
    network.load_state_dict(state)
    return network.eval(), digest


def _features_of(network: UNet3D) -> list[int]:
    return [int(down.conv[0].out_channels) for down in network.downs]
