"""The CIFAR-10 ResNets of He et al. (2016), as in akamaster/pytorch_resnet_cifar10.

``cifar:resnet20|resnet32|resnet44|resnet56``: 3 stages of 16/32/64 channels with n = 3/5/7/9 basic
blocks each, "option A" shortcuts (stride-2 subsampling and zero-padded channels, no parameters),
global average pooling and a 64 -> 10 linear classifier. Module names match that repository's
checkpoints (``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``linear``).
"""

from __future__ import annotations

from repreval.api import InputSpec, ModelSource, Network, ReprevalError, hookimpl, suggest

# The nn.Module classes live in .networks, imported by build(): registering the source needs no torch.

BLOCKS_PER_STAGE = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CifarResNets(ModelSource):
    """CIFAR-10 ResNets of He et al. (resnet20/32/44/56, option-A shortcuts; akamaster checkpoints load)."""

    name = "cifar"

    def model_names(self):
        return tuple(BLOCKS_PER_STAGE)

    def build(self, name: str, options: dict, seed: int) -> Network:
        if name not in BLOCKS_PER_STAGE:
            raise ReprevalError(f"unknown CIFAR ResNet {name!r}", fix=suggest(name, BLOCKS_PER_STAGE))
        if options:
            raise ReprevalError(
                f"cifar:{name} takes no options, got {', '.join(map(repr, options))}",
                fix="remove them",
            )
        from .networks import CifarResNet

        module = CifarResNet(BLOCKS_PER_STAGE[name])
        return Network(
            module=module,
            input_spec=InputSpec(3, 32, 32, mean=IMAGENET_MEAN, std=IMAGENET_STD),
            default_layers=("layer1", "layer2", "layer3"),
            embed=module.forward_features,
            classify=module,
            description=f"CIFAR-10 {name} (He et al. 2016, option A)",
        )


@hookimpl
def register_model_sources(register):
    """Register the ``cifar`` model source."""
    register(CifarResNets)


def __getattr__(name: str):
    """``CifarResNet``, ``BasicBlock`` and ``ChannelPadShortcut`` stay importable from here (from .networks)."""
    if name in ("CifarResNet", "BasicBlock", "ChannelPadShortcut"):
        from . import networks

        return getattr(networks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
