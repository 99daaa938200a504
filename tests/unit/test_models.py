"""Model shapes: the built-in table (published config.json values) and local config.json files."""

import json

import pytest

from hpcjobs import models
from hpcjobs.errors import BadInput

# Exact parameter counts of the Hugging Face checkpoints (sum of tensor sizes), and the model
# cards' rounded figures: computed from the shapes, they must agree.
EXACT = {
    "llama-2-7b": 6_738_415_616,
    "llama-2-70b": 68_976_648_192,
    "llama-3-8b": 8_030_261_248,
    "llama-3-70b": 70_553_706_496,
    "mixtral-8x7b": 46_702_792_704,
}


def test_table_has_the_required_models():
    assert set(models.names()) >= {"llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3-8b",
                                   "llama-3-70b", "mixtral-8x7b"}


@pytest.mark.parametrize("name", models.names())
def test_computed_params_match_published(name):
    m = models.builtin(name)
    assert m.published_params
    assert abs(m.params / m.published_params - 1) < 0.005, (m.params, m.published_params)
    if name in EXACT:
        assert m.params == EXACT[name]


def test_published_shapes():
    m = models.builtin("llama-2-70b")
    assert (m.num_attention_heads, m.num_kv_heads, m.num_layers, m.hidden_size) == (64, 8, 80, 8192)
    assert (m.intermediate_size, m.vocab_size, m.max_position_embeddings, m.head_dim) == \
        (28672, 32000, 4096, 128)
    assert m.torch_dtype == "float16"
    l3 = models.builtin("llama-3-8b")
    assert (l3.num_kv_heads, l3.vocab_size, l3.max_position_embeddings, l3.torch_dtype) == \
        (8, 128256, 8192, "bfloat16")
    assert models.builtin("llama-2-13b").num_attention_heads == 40


def test_mixtral_experts():
    m = models.builtin("mixtral-8x7b")
    assert (m.num_experts, m.experts_per_token) == (8, 2)
    assert round(m.params / 1e9, 1) == 46.7
    assert round(m.active_params / 1e9, 1) == 12.9  # "12.9B active" (Mistral's announcement)


def test_kv_cache_per_token():
    # 2 (K, V) x 80 layers x 8 KV heads x 128 head dim x 2 B = 320 KiB per token (Llama-2-70B fp16).
    m = models.builtin("llama-2-70b")
    assert m.kv_bytes_per_token(2) == 320 * 1024
    assert m.kv_bytes_per_token(2, tp=8) == 40 * 1024  # 1 KV head per GPU
    assert m.kv_bytes_per_token(2, tp=16) == 40 * 1024  # replicated, not fewer


@pytest.mark.parametrize("hub_id, name", [
    ("meta-llama/Llama-2-70b-hf", "llama-2-70b"),
    ("meta-llama/Llama-2-70b-chat-hf", "llama-2-70b"),
    ("meta-llama/Meta-Llama-3-8B-Instruct", "llama-3-8b"),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b"),
    ("TheBloke/Llama-2-70B-chat-GPTQ", "llama-2-70b"),
    ("LLAMA-2-13B", "llama-2-13b"),
])
def test_hub_ids_map_to_the_table(hub_id, name):
    assert models.resolve(hub_id).name == name


def _write(path, cfg):
    path.write_text(json.dumps(cfg))
    return path


def _raw(path, text):
    path.write_text(text)
    return str(path)


def _mkdir(path):
    path.mkdir()
    return str(path)


TINY = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 1000,
        "max_position_embeddings": 512, "torch_dtype": "float32"}


def test_config_directory_and_file(tmp_path):
    d = tmp_path / "tiny-llama"
    d.mkdir()
    _write(d / "config.json", TINY)
    for arg in (str(d), str(d / "config.json")):
        m = models.resolve(arg)
        assert m.name == "tiny-llama"
        assert (m.num_layers, m.num_kv_heads, m.head_dim, m.torch_dtype) == (4, 2, 64, "float32")
        # embed 256k + 4 x (attn 2*256*256 + 2*256*128, mlp 3*256*512, norms 512) + norm + head
        assert m.params == 1000 * 256 * 2 + 4 * (2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 512 + 512) + 256


def test_defaults_of_a_minimal_config(tmp_path):
    cfg = {k: TINY[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                "vocab_size", "max_position_embeddings")}
    m = models.load_config(_write(tmp_path / "config.json", cfg))
    assert m.num_kv_heads == 4 and m.head_dim == 64 and m.intermediate_size == 1024


def test_text_config_and_gpt2_keys(tmp_path):
    m = models.load_config(_write(tmp_path / "a.json", {"model_type": "llava", "torch_dtype": "float16",
                                                        "text_config": TINY}))
    assert m.num_layers == 4 and m.torch_dtype == "float16"
    g = models.load_config(_write(tmp_path / "g.json", {"model_type": "gpt2", "n_embd": 768, "n_layer": 12,
                                                        "n_head": 12, "n_positions": 1024,
                                                        "vocab_size": 50257}))
    assert (g.num_layers, g.hidden_size, g.intermediate_size, g.gated_mlp) == (12, 768, 3072, False)


@pytest.mark.parametrize("make, expect", [
    (lambda p: str(p / "missing"), "does not exist"),
    (lambda p: _mkdir(p / "empty"), "has no config.json"),
    (lambda p: _raw(p / "bad.json", "{not json"), "not valid JSON"),
    (lambda p: str(_write(p / "x.json", {"hidden_size": 8})), "missing 'num_attention_heads'"),
    (lambda p: str(_write(p / "y.json", {**TINY, "num_key_value_heads": 3})), "not a multiple"),
    (lambda p: str(_write(p / "z.json", {**TINY, "num_hidden_layers": 0})), "positive integer"),
    (lambda p: str(_write(p / "l.json", [1, 2])), "JSON object"),
])
def test_bad_model_paths_name_the_option(tmp_path, make, expect):
    with pytest.raises(BadInput) as err:
        models.resolve(make(tmp_path))
    assert err.value.field == "--model"
    assert expect in str(err.value)


def test_unknown_name_lists_the_table():
    with pytest.raises(BadInput) as err:
        models.resolve("gpt-5")
    assert err.value.field == "--model"
    assert "llama-2-70b" in err.value.fix
    with pytest.raises(BadInput) as err:
        models.resolve(None, field_name="--model-shape")
    assert err.value.field == "--model-shape"


def test_local_path_wins_over_the_table(tmp_path, monkeypatch):
    d = tmp_path / "llama-2-70b"
    d.mkdir()
    _write(d / "config.json", TINY)
    monkeypatch.chdir(tmp_path)
    assert models.resolve("llama-2-70b").num_layers == 4  # the directory, not the table
