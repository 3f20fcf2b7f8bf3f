"""The evaluation inputs of a run: each dataset loaded once per input spec, and the seeded noise sets."""

from __future__ import annotations

import torch
from torch import Tensor

from ..api import ImageSet, InputSpec, Network, TextSet
from ..config import Suite
from ..data import load_images, load_texts, noise_inputs, normalize
from ..errors import ReprevalError
from ..plugins import Plugins
from .context import derived_seed

#: the two noise input sets (noise score: real vs ``noise``; its chance level: ``noise`` vs ``noise_b``) and the
#: names their seeds derive from
NOISE_SETS = {"noise": "a", "noise_b": "b"}


class Inputs:
    """Preprocessed evaluation inputs and noise sets, cached per input spec."""

    def __init__(
        self,
        suite: Suite,
        plugins: Plugins,
        device: torch.device,
        shipped: dict[tuple[str, InputSpec], ImageSet | TextSet] | None = None,
    ):
        """``shipped``: every dataset already loaded elsewhere (a Ray task's, from the driver): nothing is read
        from files, and a dataset missing from it is an error."""
        self.suite, self.plugins, self.device = suite, plugins, device
        self._loaded: dict[tuple[str, InputSpec], ImageSet | TextSet] = dict(shipped or {})
        self._shipped_only = shipped is not None
        self._last_batches: tuple[tuple[str, InputSpec], dict[str, Tensor]] | None = None

    def loaded(self, dataset: str, spec: InputSpec) -> ImageSet | TextSet:
        """The dataset's inputs for networks of ``spec``: images fitted to it, or texts for a text encoder."""
        key = (dataset, spec)
        if key not in self._loaded and self._shipped_only:
            raise ReprevalError(
                f"dataset {dataset!r} was not shipped to this worker, which reads none of the driver's files",
                fix="report this as a bug of repreval's task payload",
            )
        if key not in self._loaded:
            config = self.suite.datasets[dataset]
            source = self.plugins.dataset.create(config.kind, config.options)
            where = f"{self.suite.where}: datasets.{dataset}"
            if spec.tokens:
                self._loaded[key] = load_texts(source, config.subset, spec, where, config.drift)
            else:
                self._loaded[key] = load_images(source, config.subset, spec, where, config.drift, config.landmarks)
        return self._loaded[key]

    def batch_source(self, network: Network, dataset: str) -> dict[str, Tensor]:
        """``real`` inputs of ``dataset`` plus the two seeded noise sets, normalised, on the device.

        The last one is kept: consecutive groups (layers, methods) of a dataset share it."""
        spec = network.input_spec
        if self._last_batches is None or self._last_batches[0] != (dataset, spec):
            data = self.loaded(dataset, spec)
            seeds = {name: derived_seed(self.suite.seed, f"noise-{part}") for name, part in NOISE_SETS.items()}
            if isinstance(data, TextSet):  # token ids; noise: random tokens where the texts have tokens
                if network.tokenize is None or network.noise_like is None:
                    raise ReprevalError("the model reads token ids but gives no tokenizer", where=network.description)
                real = network.tokenize(data.texts)
                batches = {"real": real, **{name: network.noise_like(real, seed) for name, seed in seeds.items()}}
            else:
                images = data.images
                assert isinstance(images, Tensor)  # load_images fits every image to the spec: one [N, C, H, W] tensor
                batches = {
                    "real": normalize(images, spec),
                    **{name: normalize(noise_inputs(len(images), spec, seed), spec) for name, seed in seeds.items()},
                }
            self._last_batches = ((dataset, spec), {name: batch.to(self.device) for name, batch in batches.items()})
        return self._last_batches[1]

    def training_data(self, dataset: str):
        """``provide(network)``: the dataset's images and preprocessed inputs for ``network`` (training, probes)."""

        def provide(network: Network) -> tuple[ImageSet, Tensor]:
            data = self.loaded(dataset, network.input_spec)
            if not isinstance(data, ImageSet):
                raise ReprevalError("repreval trains image models only", fix="evaluate the text encoder as it is")
            assert isinstance(data.images, Tensor)  # load_images fits every image to the spec: one tensor
            return data, normalize(data.images, network.input_spec)

        return provide
