"""The paper's two autoencoders (appendix of Bertolini et al.), for 1×28×28 inputs in [0, 1].

Probe layers are the encoder's conv blocks (``encoder.block1``, ...): conv -> BatchNorm -> activation,
so a block's output is the activation the paper's scores read.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from repreval.api import ReprevalError

ACTIVATIONS = {"softplus": nn.Softplus, "relu": nn.ReLU}


class Autoencoder(nn.Module):
    """``encoder`` (input -> code [B, D]), ``decoder`` (code -> reconstruction), optional ``classifier`` on the code."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, classifier: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


def conv_block(conv: nn.Conv2d | nn.ConvTranspose2d, activation: nn.Module, batch_norm: bool = True) -> nn.Sequential:
    """conv -> (BatchNorm) -> activation, as one module named for probing."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(conv=conv)
    if batch_norm:
        layers["bn"] = nn.BatchNorm2d(conv.out_channels)
    layers["act"] = activation
    return nn.Sequential(layers)


def first_two_conv_stages(activation: type[nn.Module]) -> OrderedDict:
    """Shared by both encoders: conv 8/5/1/2 and conv 4/5/1/2, each with BN, activation, maxpool 2 (28 -> 7)."""
    return OrderedDict(
        block1=conv_block(nn.Conv2d(1, 8, 5, 1, 2), activation()),
        pool1=nn.MaxPool2d(2),
        block2=conv_block(nn.Conv2d(8, 4, 5, 1, 2), activation()),
        pool2=nn.MaxPool2d(2),
    )


def drift_autoencoder() -> Autoencoder:
    """The dataset-drift autoencoder: a 32-D code (2 channels × 4 × 4)."""
    encoder = first_two_conv_stages(nn.ReLU)  # 28 -> 14 -> 7
    encoder.update(
        block3=conv_block(nn.Conv2d(4, 2, 3, 1, 2), nn.ReLU(), batch_norm=False),  # 7 -> 9
        pool3=nn.MaxPool2d(2),  # 9 -> 4
        flatten=nn.Flatten(),  # 2 × 4 × 4 = 32
    )
    # The appendix lists one "upsample x2" and three stride-1 transposed convs, which cannot reach 28×28
    # from 4×4. We mirror the encoder instead: nearest-neighbour upsampling x2 before *each* transposed conv
    # (as each encoder conv is followed by a maxpool). Sizes: 4 -> 8 -> 8, 8 -> 16 -> 14 (padding 3 undoes
    # block3's padding 2), 14 -> 28 -> 28.
    decoder = nn.Sequential(
        OrderedDict(
            unflatten=nn.Unflatten(1, (2, 4, 4)),
            up1=nn.Upsample(scale_factor=2),
            block1=conv_block(nn.ConvTranspose2d(2, 4, 5, 1, 2), nn.ReLU()),
            up2=nn.Upsample(scale_factor=2),
            block2=conv_block(nn.ConvTranspose2d(4, 8, 5, 1, 3), nn.ReLU()),
            up3=nn.Upsample(scale_factor=2),
            block3=conv_block(nn.ConvTranspose2d(8, 1, 5, 1, 2), nn.Sigmoid(), batch_norm=False),
        )
    )
    return Autoencoder(nn.Sequential(encoder), decoder)


def constrained_autoencoder(bottleneck: int = 10, activation: str = "softplus") -> Autoencoder:
    """The score-constrained autoencoder with a classifier on its ``bottleneck``-D code.

    Softplus (the default) keeps second derivatives non-zero, which training with score constraints needs.
    """
    if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or bottleneck < 1:
        raise ReprevalError(f"bottleneck must be a positive integer, got {bottleneck!r}", fix="e.g. bottleneck: 10")
    if activation not in ACTIVATIONS:
        raise ReprevalError(
            f"unknown activation {activation!r}", fix="use " + " or ".join(repr(name) for name in ACTIVATIONS)
        )
    encoder = first_two_conv_stages(ACTIVATIONS[activation])
    encoder.update(flatten=nn.Flatten(), fc=nn.Linear(4 * 7 * 7, bottleneck))
    decoder = nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(bottleneck, 32),
            act=nn.ReLU(),
            fc2=nn.Linear(32, 28 * 28),
            output=nn.Sigmoid(),
            unflatten=nn.Unflatten(1, (1, 28, 28)),
        )
    )
    return Autoencoder(nn.Sequential(encoder), decoder, classifier=nn.Linear(bottleneck, 10))
