"""Models as a suite declares them: source, weights (file, hub or training step), embedding, layers."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .api import ImageSet, Layout, ModelHandle, ModelSource, Network, TrainingContext
from .config import ModelConfig
from .engine.probe import Probe, as_feature_map, first_tensor, probe_layout
from .errors import ReprevalError, suggest
from .resources import TRAINING_THREADS, torch_threads

CACHE_ENV = "REPREVAL_CACHE"


def cache_dir() -> Path:
    """Where trained models are cached: ``$REPREVAL_CACHE``, else ``~/.cache/repreval``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "repreval")


@contextmanager
def seeded(seed: int):
    """Run a block with torch's global RNG seeded, restoring the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class Model(ModelHandle):
    """A suite's model, built on demand; what variants see.

    ``training_data`` returns (images as the dataset gives them, preprocessed inputs) for the
    training dataset; it is only called when a training step runs (cache miss), with ``training_context``
    (the host's registries and device) handed to the source's ``train``.
    """

    def __init__(
        self,
        config: ModelConfig,
        source: ModelSource,
        training_data: Callable[[Network], tuple[ImageSet, Tensor]] | None = None,
        training_data_key: str = "",
        where: str = "model",
        training_context: TrainingContext | None = None,
    ):
        self.config = config
        self.source = source
        self.training_data = training_data
        self.training_context = training_context
        self.training_data_key = training_data_key  # describes the training dataset, for the cache key
        self.where = where
        self._trained_state: dict[str, Tensor] | None = None
        self.training_log: dict | None = None  # the training step's log (seconds, loss, ...), also when cached

    # -- architecture ------------------------------------------------------------------------
    def untrained(self, seed: int) -> Network:
        with seeded(seed):
            try:
                network = self.source.build(self.config.name, dict(self.config.options), seed)
            except ReprevalError:
                raise
            except Exception as exc:  # a plugin's own failure on these options: one line, never a traceback
                cause = (str(exc).strip().splitlines() or [""])[0][:200]
                raise ReprevalError(
                    f"model {self.config.spec!r} could not be built: {type(exc).__name__}: {cause}",
                    where=self.where,
                    fix="check the model's options",
                ) from None
        if self.config.embedding:
            network = with_embedding_at(network, self.config.embedding, self.where)
        network.module.eval()
        return network

    def layers(self, network: Network) -> tuple[str, ...]:
        """The probe layers: the suite's ``layers``, else ``network``'s defaults."""
        return self.config.layers or network.default_layers

    # -- weights -----------------------------------------------------------------------------
    def use_weights(self, state: dict[str, Tensor], training_log: dict | None) -> None:
        """Take trained weights obtained elsewhere (a Ray task gets them from the driver): :meth:`trained` then
        reads no file and trains nothing."""
        self._trained_state, self.training_log = state, training_log

    def trained(self) -> Network:
        network = self.untrained(self.config.seed)
        if self._trained_state is None:
            self._trained_state = self._obtain_weights(network)
        network.module.load_state_dict(self._trained_state)
        network.module.eval()
        return network

    def _obtain_weights(self, network: Network) -> dict[str, Tensor]:
        config = self.config
        if config.train is not None:
            return self._train_or_load_cached(network)
        if config.weights == "hub":
            self.source.load_pretrained(network, config.name, dict(config.options))
        elif config.weights:
            state = read_checkpoint(config.weights, where=f"{self.where}.weights")
            state = self.source.convert_state_dict(state, network)
            load_state(network.module, state, match=config.weights_match, where=f"{self.where}.weights")
        else:
            raise ReprevalError(
                "the 'trained' variant needs weights, but this model has none",
                where=self.where,
                fix="add 'weights: PATH' (or 'weights: hub', or a 'train:' step), "
                "or evaluate only the 'random' variant",
            )
        return copy.deepcopy(network.module.state_dict())

    def cache_key(self) -> str:
        """16 hex digits naming the trained weights: spec, options, training step, seed and training data."""
        config = self.config
        described = {
            "spec": config.spec,
            "options": config.options,
            "train": config.train and {"dataset": config.train.dataset, "options": config.train.options},
            "seed": config.seed,
            "training_data": self.training_data_key,
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def checkpoint_path(self) -> Path:
        """The cached trained state dict: ``<cache dir>/models/<spec, cut to 100 characters>-<cache key>.pt``."""
        ascii_name = (c if c.isascii() and c.isalnum() or c in "-_" else "_" for c in self.config.spec)
        slug = "".join(ascii_name)[:100]  # the file name stays below the system's 255 bytes
        return cache_dir() / "models" / f"{slug}-{self.cache_key()}.pt"

    def _train_or_load_cached(self, network: Network) -> dict[str, Tensor]:
        path = self.checkpoint_path()
        cached = load_cached(path, network.module)
        if cached is not None:
            state, self.training_log = cached
            return state
        if self.training_data is None or self.training_context is None:
            raise ReprevalError("no training data available", where=f"{self.where}.train")
        train = self.config.train
        assert train is not None  # only models with a training step are trained
        data, inputs = self.training_data(network)
        network.module.train()
        with seeded(self.config.seed), torch_threads(TRAINING_THREADS):
            self.training_log = self.source.train(
                network, data, inputs, dict(train.options), self.config.seed, self.training_context
            )
        network.module.eval()
        state = copy.deepcopy(network.module.state_dict())
        save_cached(path, state, self.training_log)
        return state


def load_cached(path: Path, module: nn.Module) -> tuple[dict[str, Tensor], dict | None] | None:
    """A cached state dict loaded into ``module`` (``weights_only``), with its training log; None when there is
    none, or when it is damaged (then it is removed: retrained, not trusted)."""
    if not path.exists():
        return None
    log_path = path.with_suffix(".json")
    try:
        state = quiet_load(path)
        module.load_state_dict(state)
    except Exception:
        path.unlink(missing_ok=True)
        return None
    return state, (json.loads(log_path.read_text()) if log_path.is_file() else None)


def save_cached(path: Path, state: dict[str, Tensor], log: dict | None) -> None:
    """Store a trained state dict and its log; the state appears atomically, never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    path.with_suffix(".json").write_text(json.dumps(log))
    os.replace(temporary, path)


# ---------------------------------------------------------------------------------------------
# Checkpoints


def read_checkpoint(path: str | os.PathLike, where: str = "weights") -> dict[str, Tensor]:
    """A state dict from a ``.pt/.pth/.th`` (``weights_only=True``) or ``.safetensors`` file.

    Common wrappers (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped and a ``module.``
    prefix (DataParallel) is removed.
    """
    from .files import regular_file, shown

    path = Path(path)
    regular_file(path, "weights file", where)  # a path too long or a FIFO: one line, not an OSError or a hang
    state: object  # whatever the file holds, until checked below
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = quiet_load(path)
    except Exception as exc:
        raise ReprevalError(
            f"weights file {shown(path)} is not a readable checkpoint ({type(exc).__name__}: corrupt, truncated, "
            "or holding objects other than tensors)",
            where=where,
            fix="give a state dict saved with torch.save(model.state_dict(), PATH), or a .safetensors file",
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ReprevalError(f"weights file {shown(path)} holds no state dict of tensors", where=where)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def quiet_load(path: Path) -> Any:
    """``torch.load`` with ``weights_only``, its warnings about the file (pickle protocol, ...) silenced: a bad
    file is reported by the caller in one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def load_state(module: nn.Module, state: dict[str, Tensor], match: str = "name", where: str = "weights") -> None:
    """Load strictly, by key name or by position (same order, every shape checked).

    Only BatchNorm ``num_batches_tracked`` counters may be absent from the checkpoint.
    """
    own = module.state_dict()
    if match == "position":
        if len(own) != len(state):
            raise ReprevalError(
                f"the checkpoint has {len(state)} tensors, the model {len(own)}",
                where=where,
                fix="positional matching needs the same architecture",
            )
        renamed = {}
        for (name, target), (their_name, tensor) in zip(own.items(), state.items()):
            if target.shape != tensor.shape:
                raise ReprevalError(
                    f"tensor {their_name!r} {tuple(tensor.shape)} does not fit {name!r} {tuple(target.shape)}",
                    where=where,
                )
            renamed[name] = tensor
        state = renamed
    # Checkpoints from before PyTorch 0.4.1 lack BatchNorm's batch counters; they are unused in eval mode.
    state = {**{k: v for k, v in own.items() if k.endswith(".num_batches_tracked")}, **state}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {unexpected[0]!r})")
        if mismatched:
            parts.append(f"wrong shape {len(mismatched)} (e.g. {mismatched[0]!r})")
        raise ReprevalError(
            "checkpoint does not fit the model: " + ", ".join(parts),
            where=where,
            fix="check the architecture name and options, or try 'weights_match: position'",
        )
    module.load_state_dict(state)


# ---------------------------------------------------------------------------------------------
# Embedding and layers


def pooled(output: Tensor) -> Tensor:
    """[B, C, h, w] -> [B, C] by global average pooling; [B, N, C] tokens -> mean token; [B, D] as is."""
    if output.dim() == 4:
        return output.mean(dim=(2, 3))
    if output.dim() == 3:
        return output.mean(dim=1)
    return output.flatten(1)


def with_embedding_at(network: Network, module_name: str, where: str) -> Network:
    """The same network whose embedding is the (pooled) output of ``module_name``."""
    modules = dict(network.module.named_modules())
    if module_name not in modules or not module_name:
        raise ReprevalError(
            f"no module {module_name!r} for the embedding",
            where=f"{where}.embedding",
            fix=suggest(module_name, [n for n in modules if n]),
        )
    target = modules[module_name]
    root = network.module

    def embed(inputs: Tensor) -> Tensor:
        captured: list[Tensor] = []
        handle = target.register_forward_hook(lambda _m, _i, output: captured.append(output))
        try:
            root(inputs)
        finally:
            handle.remove()
        return pooled(captured[0])

    return replace(network, embed=embed)  # the layouts stay: the module is the same


@dataclass
class LayerInfo:
    """A row of :func:`layer_table`: module name, type name, output shape without the batch dimension (its first
    tensor, for a module returning a tuple or an output object), whether it is a default probe layer, how its tensor
    is read, the shape of its maps (C, h, w), and what measuring it found (``repreval.layouts``): ``verified``,
    ``no positions`` or why it is refused (``unreadable``), and how its positions reach the embedding."""

    name: str
    kind: str
    shape: tuple[int, ...]  # output shape for one input
    default: bool
    layout: str = ""
    map_shape: tuple[int, ...] | None = None
    unreadable: str = ""
    verdict: str = ""
    reach: str = ""


def layer_table(network: Network) -> tuple[list[LayerInfo], int]:
    """Every module on the embedding's path (its output reaches the embedding's gradient), in execution order, with
    the verdict of the layout check, and the embedding size."""
    from .layouts import verify_layers

    shapes: dict[str, tuple[str, tuple[int, ...]]] = {}
    handles = []
    for name, module in network.module.named_modules():
        if not name:
            continue

        def record(_m, _i, output, name=name, module=module):
            tensor = first_tensor(output)
            if tensor is not None and name not in shapes:
                shapes[name] = (type(module).__name__, tuple(tensor.shape[1:]))

        handles.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            embedding = network.embed(network.input_spec.example())
    finally:
        for handle in handles:
            handle.remove()
    defaults = set(network.default_layers)
    verdicts = verify_layers(network, [Probe(name) for name in shapes])
    rows = []
    for (name, (kind, shape)), verdict in zip(shapes.items(), verdicts.values()):
        if verdict.reach == "unused":
            continue
        layout = probe_layout(network, Probe(name))
        default = name in defaults and verdict.usable and verdict.reach != "none"  # as validation keeps them
        row = LayerInfo(
            name, kind, shape, default, layout=describe_layout(layout, len(shape)),
            verdict=verdict.status, reach=verdict.reach,
        )  # fmt: skip
        if verdict.usable:
            row.map_shape = tuple(as_feature_map(torch.zeros(1, *shape), name, layout).shape[1:])
        else:
            row.unreadable = verdict.reason
        rows.append(row)
    return rows, embedding.shape[1]


def describe_layout(layout: Layout, dims: int) -> str:
    """How a tensor with ``dims`` dimensions (batch excluded) is read: ``vector``, ``C×h×w``, ``h×w×C``, or
    ``tokens 1+4×4`` (prefix tokens + grid)."""
    if dims == 1:
        return "vector"
    if layout.kind == "tokens" and dims == 2:
        return f"tokens {layout.prefix_tokens}+{layout.grid[0]}×{layout.grid[1]}" if layout.grid else "token sequence"
    return {"channels_first": "C×h×w", "channels_last": "h×w×C"}.get(layout.kind, layout.kind) if dims == 3 else "?"
