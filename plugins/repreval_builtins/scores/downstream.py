"""Downstream scores: how useful the embedding is for classification (the paper's section 4.2).

``linear_probe``: a scikit-learn logistic regression fitted on the embeddings of one dataset (standardised
features) and scored top-1 / top-5 on another; ``classifier_accuracy``: the network's own classifier.
Both need labelled datasets; splits are whatever the suite declares (``limit``/``skip``/``seed``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from repreval.api import EmbeddingScore, ImageSet, Network, PluginOptionError, ReprevalError

if TYPE_CHECKING:  # numpy, torch and scikit-learn are imported where the scores compute, not on registration
    import numpy as np
    from torch import Tensor

BATCH = 256  # inputs per forward pass when embedding a dataset


def _labels(images: ImageSet, dataset: str, score: str) -> np.ndarray:
    if images.labels is None:
        raise ReprevalError(
            f"{score} needs labels, but dataset {dataset!r} has none",
            fix="use a labelled dataset (image_folder, mnist, digits)",
        )
    return images.labels.numpy()


def top_k_accuracy(scores: np.ndarray, classes: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` highest-scoring ``classes``."""
    import numpy as np

    best = classes[np.argsort(-scores, axis=1, kind="stable")[:, :k]]
    return float((best == labels[:, None]).any(axis=1).mean())


def _device_inputs(network: Network, inputs: Tensor) -> Tensor:
    parameter = next(network.module.parameters(), None)
    return inputs.to(parameter.device) if parameter is not None else inputs


def _apply(function: Callable[[Tensor], Tensor], network: Network, inputs: Tensor) -> np.ndarray:
    import torch

    outputs = []
    with torch.no_grad():
        for start in range(0, len(inputs), BATCH):
            outputs.append(function(_device_inputs(network, inputs[start : start + BATCH])).float().cpu())
    return torch.cat(outputs).numpy()


class LinearProbe(EmbeddingScore):
    """Logistic regression on the embeddings: fit on ``train``, top-1/top-5 accuracy on ``test``."""

    name = "linear_probe"
    metrics = ("top1", "top5")
    bounds = (0.0, 1.0)

    def __init__(self, train: str, test: str, max_iter: int = 1000, C: float = 1.0):
        for option, value in (("train", train), ("test", test)):
            if not isinstance(value, str) or not value:
                raise PluginOptionError(f"{option!r} must name a dataset of the suite, got {value!r}")
        if train == test:
            raise ReprevalError(
                "the probe's train and test datasets are the same",
                fix="declare two disjoint subsets (limit/skip) of the data",
            )
        self.train, self.test, self.max_iter, self.C = train, test, int(max_iter), float(C)

    def datasets(self) -> tuple[str, ...]:
        return (self.train, self.test)

    def compute(self, network, data, seed) -> dict[str, float]:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        (train_images, train_inputs), (test_images, test_inputs) = data(self.train), data(self.test)
        train_labels = _labels(train_images, self.train, self.name)
        test_labels = _labels(test_images, self.test, self.name)
        features = _apply(network.embed, network, train_inputs)
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=self.max_iter, C=self.C, random_state=seed))
        probe.fit(features, train_labels)
        scores = probe.predict_proba(_apply(network.embed, network, test_inputs))
        classes = probe.classes_
        return {f"top{k}": top_k_accuracy(scores, classes, test_labels, k) for k in (1, 5)}


class ClassifierAccuracy(EmbeddingScore):
    """The network's own classifier, top-1/top-5 on ``dataset`` (class index = label)."""

    name = "classifier_accuracy"
    metrics = ("top1", "top5")
    bounds = (0.0, 1.0)

    def __init__(self, dataset: str):
        if not isinstance(dataset, str) or not dataset:
            raise PluginOptionError(f"'dataset' must name a dataset of the suite, got {dataset!r}")
        self.dataset = dataset

    def datasets(self) -> tuple[str, ...]:
        return (self.dataset,)

    def compute(self, network, data, seed) -> dict[str, float]:
        import numpy as np

        if network.classify is None:
            raise ReprevalError(
                "this model has no classifier", fix="use linear_probe instead of classifier_accuracy for it"
            )
        images, inputs = data(self.dataset)
        labels = _labels(images, self.dataset, self.name)
        logits = _apply(network.classify, network, inputs)
        return {f"top{k}": top_k_accuracy(logits, np.arange(logits.shape[1]), labels, k) for k in (1, 5)}
