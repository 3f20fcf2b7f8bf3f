"""Model source ``hf:<directory>``: a Hugging Face ``transformers`` text encoder saved in a local directory.

``transformers`` loads the model and its tokenizer (``pip install transformers``; nothing is downloaded: the
directory must hold ``config.json``, the tokenizer files and, for the trained variant, the weights; a directory
whose config names code of its own, ``auto_map``, is refused: ``trust_remote_code`` is always False). A random
twin is built from the same config, seeded. ``weights: hub`` loads the directory's own weights (a
``model.safetensors`` path works too).

Inputs: each text becomes exactly ``length`` token ids (option, default 16: ``[CLS]``, the first
``length - 2`` word pieces, ``[SEP]``); a text with fewer tokens is refused (padding would give positions
whose maps are zero by construction), naming it. Noise inputs: every non-special token replaced by a
uniformly drawn non-special token of the vocabulary (seeded), so a noise text has the same length and the
same special tokens. The embedding is the model's own pooling as its sentence-transformers files declare
it (``1_Pooling``: mean or CLS token; ``Normalize``: L2), mean pooling without them. Probe layers: the
encoder blocks (default: all), read as tokens: each map is a 1×N row over the text's tokens. The blocks are
the module list that holds one module per hidden layer (``encoder.layer.N`` in BERT, ``transformer.layer.N``
in DistilBERT); a block that returns a tuple (``(hidden_states,)``, ``(hidden_states, attentions)``) is read
at its first tensor, the hidden states.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from repreval.api import InputSpec, Layout, ModelSource, Network, PluginOptionError, ReprevalError, hookimpl

_OPTIONS = {"length"}
#: Every transformers call: never the directory's own code, never the network
NO_CODE = {"trust_remote_code": False, "local_files_only": True}
#: Files whose ``auto_map`` names code of the directory's own
CODE_MAPS = ("config.json", "tokenizer_config.json")


class HuggingFaceText(ModelSource):
    """A transformers text encoder from a local directory (hf:PATH)."""

    name = "hf"

    def model_names(self):
        return []

    def build(self, name: str, options: dict, seed: int) -> Network:
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise PluginOptionError(f"unknown hf option {unknown[0]!r}; the option is: length")
        length = options.get("length", 16)
        if isinstance(length, bool) or not isinstance(length, int) or length < 3:
            raise PluginOptionError(f"'length' must be an integer of at least 3 tokens, got {length!r}")
        directory = _model_directory(name)
        transformers = _transformers()
        config = transformers.AutoConfig.from_pretrained(directory, **NO_CODE)
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory, **NO_CODE)
        model = transformers.AutoModel.from_config(config, attn_implementation="eager", trust_remote_code=False).eval()
        pooling, normalize = _pooling(directory)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

        def embed(ids):
            import torch

            mask = (ids != pad).long()
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            if pooling == "cls":
                pooled = hidden[:, 0]
            else:
                weights = mask[..., None].to(hidden.dtype)
                pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled

        return Network(
            module=model,
            input_spec=InputSpec(channels=1, height=1, width=length, tokens=length),
            default_layers=_blocks(model, config),
            embed=embed,
            description=f"hf {directory.name} ({type(model).__name__}, {length} tokens, {pooling} pooling)",
            layout=Layout("tokens"),  # [B, N, C], no prefix set aside, no grid: 1×N maps
            tokenize=lambda texts: _tokenize(tokenizer, texts, length),
            noise_like=lambda ids, noise_seed: _noise_like(tokenizer, ids, noise_seed),
        )

    def load_pretrained(self, network: Network, name: str, options: dict) -> None:
        published = _transformers().AutoModel.from_pretrained(
            _model_directory(name), attn_implementation="eager", **NO_CODE
        )
        network.module.load_state_dict(published.state_dict())

    def convert_state_dict(self, state_dict: dict, network: Network) -> dict:
        """Drop buffers a checkpoint keeps but this transformers version does not (``position_ids``)."""
        own = network.module.state_dict()
        return {key: value for key, value in state_dict.items() if key in own or not key.endswith("position_ids")}


#: Names of the module list that holds an encoder's blocks, where several lists have one module per layer
BLOCK_LISTS = ("layer", "layers", "block", "blocks")


def _blocks(model, config) -> tuple[str, ...]:
    """The encoder's blocks: the elements of its module list with one module per hidden layer (the one named
    like a block list where several are); none when there is no such list."""
    from torch import nn

    count = int(getattr(config, "num_hidden_layers", 0) or 0)
    lists = [
        name for name, module in model.named_modules() if isinstance(module, nn.ModuleList) and len(module) == count
    ]
    if len(lists) > 1:
        lists = [name for name in lists if name.rsplit(".", 1)[-1] in BLOCK_LISTS]
    return tuple(f"{lists[0]}.{i}" for i in range(count)) if count and len(lists) == 1 else ()


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ReprevalError(
            "the hf model source needs the transformers library", fix="pip install transformers"
        ) from None
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    return transformers


def _model_directory(name: str) -> Path:
    """The model's directory; one whose config names code of its own (``auto_map``) is refused: repreval never
    runs a model directory's code (transformers is told ``trust_remote_code=False`` as well)."""
    directory = Path(name).expanduser()
    if not (directory / "config.json").is_file():
        raise ReprevalError(
            f"hf: {name!r} is not a model directory (no config.json)",
            fix="name a local directory saved by transformers, e.g. hf:path/to/all-MiniLM-L6-v2",
        )
    for file in CODE_MAPS:
        if "auto_map" in _json_file(directory / file):
            raise ReprevalError(
                f"hf: {directory.name} needs its own Python code ('auto_map' in {file}), which repreval never runs",
                fix="use a model whose architecture transformers ships",
            )
    return directory


def _json_file(path: Path) -> dict:
    """The JSON object in ``path`` (empty when there is no file); one line when it is not one."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8")[:10_000_000])
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise ReprevalError(f"hf: {path.parent.name}/{path.name} is not a JSON object", fix="save the model again")
    return data


def _pooling(directory: Path) -> tuple[str, bool]:
    """(``mean`` or ``cls``, L2-normalise?) from the sentence-transformers files, if any."""
    pooling, normalize = "mean", False
    config = directory / "1_Pooling" / "config.json"
    if config.is_file():
        settings = json.loads(config.read_text())
        if settings.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif not settings.get("pooling_mode_mean_tokens", True):
            raise ReprevalError(
                f"hf: {directory.name} pools in a way repreval does not implement ({config})",
                fix="use a model with mean or CLS-token pooling",
            )
    modules = directory / "modules.json"
    if modules.is_file():
        normalize = any("Normalize" in str(module.get("type", "")) for module in json.loads(modules.read_text()))
    return pooling, normalize


def _tokenize(tokenizer, texts: Sequence[str], length: int):
    encoded = tokenizer(list(texts), truncation=True, max_length=length, padding="max_length", return_tensors="pt")
    ids = encoded["input_ids"]
    short = (encoded["attention_mask"].sum(dim=1) < length).nonzero().flatten().tolist()
    if short:
        text = texts[short[0]]
        raise ReprevalError(
            f"{len(short)} of {len(texts)} texts are shorter than {length} tokens, e.g. {text[:60]!r}",
            fix="use longer texts or a smaller 'length' option (--option length=N)",
        )
    return ids


def _noise_like(tokenizer, ids, seed: int):
    import torch

    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    vocabulary = torch.arange(tokenizer.vocab_size)
    ordinary = vocabulary[~torch.isin(vocabulary, special)]
    generator = torch.Generator().manual_seed(seed)
    drawn = ordinary[torch.randint(len(ordinary), ids.shape, generator=generator)]
    return torch.where(torch.isin(ids, special), ids, drawn)


@hookimpl
def register_model_sources(register):
    """Register the ``hf`` model source."""
    register(HuggingFaceText)
