"""Model shapes for the plan: a small built-in table and local Hugging Face ``config.json`` files.

The plan needs only arithmetic facts about a model (heads, KV heads, layers, widths, vocabulary,
context length), never its weights, so shapes are read offline: from the table below, whose values
are those of each model's published ``config.json`` on the Hugging Face hub, or from a local
directory holding ``config.json`` (or the file itself). Parameter counts are computed from the
shapes (and the table's published counts are kept to check the arithmetic against).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hpcjobs.errors import BadInput

# model_type values of architectures whose MLP is not gated (two matrices, not three).
_UNGATED = {"gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "gpt_bigcode", "phi", "starcoder2"}


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs to know about a decoder-only transformer."""

    name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    head_dim: int = 0  # 0: hidden_size // num_attention_heads (the config's default)
    num_experts: int = 1  # Mixture of Experts: experts per layer (1 = dense)
    experts_per_token: int = 1
    moe_intermediate_size: int = 0  # 0: intermediate_size
    tie_word_embeddings: bool = False
    gated_mlp: bool = True  # SwiGLU (Llama, Mistral): gate, up and down matrices
    torch_dtype: str = "float16"  # dtype the checkpoint is stored in ("auto" resolves to it)
    source: str = "built-in"
    published_params: float | None = None  # the model card's count, for checking the arithmetic
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.hidden_size // max(1, self.num_attention_heads))
        if self.moe_intermediate_size == 0:
            object.__setattr__(self, "moe_intermediate_size", self.intermediate_size)
        for key in ("num_layers", "hidden_size", "num_attention_heads", "num_kv_heads",
                    "intermediate_size", "vocab_size", "max_position_embeddings", "head_dim",
                    "num_experts", "experts_per_token"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(f"{self.num_attention_heads} attention heads are not a multiple of "
                             f"{self.num_kv_heads} KV heads")
        if self.experts_per_token > self.num_experts:
            raise ValueError(f"{self.experts_per_token} experts per token > {self.num_experts} experts")

    # --- parameter counts (no biases: Llama, Mistral, Mixtral have none) ---------------------

    @property
    def attention_params(self) -> int:
        """q and o: hidden x heads*head_dim each; k and v: hidden x kv_heads*head_dim each."""
        q = self.num_attention_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        return 2 * self.hidden_size * q + 2 * self.hidden_size * kv

    @property
    def expert_params(self) -> int:
        """One MLP: 3 matrices hidden x intermediate when gated (SwiGLU), else 2."""
        return (3 if self.gated_mlp else 2) * self.hidden_size * self.moe_intermediate_size

    @property
    def mlp_params(self) -> int:
        router = self.hidden_size * self.num_experts if self.num_experts > 1 else 0
        return self.num_experts * self.expert_params + router

    @property
    def layer_params(self) -> int:
        """One decoder layer: attention + MLP(s) + two RMSNorm weight vectors."""
        return self.attention_params + self.mlp_params + 2 * self.hidden_size

    @property
    def linear_layer_params(self) -> int:
        """The part of one layer that weight quantization (GPTQ, AWQ, ...) packs."""
        return self.attention_params + self.num_experts * self.expert_params

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def params(self) -> int:
        """Total parameters: embedding + layers + final norm + LM head."""
        return (self.embedding_params + self.num_layers * self.layer_params + self.hidden_size
                + self.lm_head_params)

    @property
    def active_params(self) -> int:
        """Parameters one token passes through (MoE: only experts_per_token experts)."""
        idle = (self.num_experts - self.experts_per_token) * self.expert_params * self.num_layers
        return self.params - idle

    @property
    def largest_layer_params(self) -> int:
        """Largest single module (DeepSpeed's estimator gathers one at a time under ZeRO-3)."""
        q = self.num_attention_heads * self.head_dim
        return max(self.embedding_params, self.hidden_size * q,
                   self.hidden_size * self.moe_intermediate_size)

    def kv_bytes_per_token(self, dtype_bytes: float, layers: int | None = None,
                           tp: int = 1) -> float:
        """KV cache of one token: 2 (K and V) x layers x KV heads x head_dim x bytes.

        Under tensor parallelism each GPU holds kv_heads/TP heads, or one replicated head when
        TP > kv_heads (vLLM's QKVParallelLinear replicates KV heads in that case).
        """
        layers = self.num_layers if layers is None else layers
        heads = max(1, self.num_kv_heads // tp) if tp > 1 else self.num_kv_heads
        return 2 * layers * heads * self.head_dim * dtype_bytes

    def summary(self) -> str:
        moe = f", {self.num_experts} experts ({self.experts_per_token} active)" \
            if self.num_experts > 1 else ""
        return (f"{self.name}: {self.params / 1e9:.2f}B params, {self.num_layers} layers, "
                f"hidden {self.hidden_size}, {self.num_attention_heads} heads / "
                f"{self.num_kv_heads} KV heads (head_dim {self.head_dim}), vocab {self.vocab_size}, "
                f"max positions {self.max_position_embeddings}{moe}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra", None)
        d["params"] = self.params
        d["active_params"] = self.active_params
        return d


# --- the built-in table --------------------------------------------------------------------
# Values copied from each model's config.json on the Hugging Face hub (the repository named in
# "hf"), plus the parameter count its model card publishes. The shapes go through the same
# parser as a user's config.json.
BUILTIN: dict[str, dict] = {
    "llama-2-7b": {
        "hf": "meta-llama/Llama-2-7b-hf", "published_params": 6.74e9,
        "config": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
                   "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                   "vocab_size": 32000, "max_position_embeddings": 4096,
                   "tie_word_embeddings": False, "torch_dtype": "float16"},
    },
    "llama-2-13b": {
        "hf": "meta-llama/Llama-2-13b-hf", "published_params": 13.0e9,
        "config": {"model_type": "llama", "hidden_size": 5120, "intermediate_size": 13824,
                   "num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 40,
                   "vocab_size": 32000, "max_position_embeddings": 4096,
                   "tie_word_embeddings": False, "torch_dtype": "float16"},
    },
    "llama-2-70b": {
        "hf": "meta-llama/Llama-2-70b-hf", "published_params": 68.98e9,
        "config": {"model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
                   "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
                   "vocab_size": 32000, "max_position_embeddings": 4096,
                   "tie_word_embeddings": False, "torch_dtype": "float16"},
    },
    "llama-3-8b": {
        "hf": "meta-llama/Meta-Llama-3-8B", "published_params": 8.03e9,
        "config": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
                   "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                   "vocab_size": 128256, "max_position_embeddings": 8192,
                   "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
    },
    "llama-3-70b": {
        "hf": "meta-llama/Meta-Llama-3-70B", "published_params": 70.6e9,
        "config": {"model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
                   "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
                   "vocab_size": 128256, "max_position_embeddings": 8192,
                   "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
    },
    "mixtral-8x7b": {
        "hf": "mistralai/Mixtral-8x7B-v0.1", "published_params": 46.7e9,
        "config": {"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
                   "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                   "vocab_size": 32000, "max_position_embeddings": 32768,
                   "num_local_experts": 8, "num_experts_per_tok": 2,
                   "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
    },
}


def _norm(name: str) -> str:
    """'meta-llama/Meta-Llama-3-70B-Instruct' -> 'llama-3-70b' (hub ids and variants map to shapes)."""
    n = name.strip().lower().rsplit("/", 1)[-1].replace("_", "-")
    n = n.removeprefix("meta-")
    suffixes = ("-hf", "-instruct", "-chat", "-v0.1", "-gptq", "-awq", "-gguf", "-int4", "-int8")
    changed = True
    while changed:  # any order: "-Instruct-v0.1", "-chat-hf", "-hf-GPTQ"
        changed = False
        for suffix in suffixes:
            if n.endswith(suffix):
                n, changed = n[: -len(suffix)], True
    return n


def _alias_table() -> dict[str, str]:
    table = {}
    for key, entry in BUILTIN.items():
        table[key] = key
        table[_norm(entry["hf"])] = key
    return table


def names() -> list[str]:
    return list(BUILTIN)


def builtin(name: str) -> ModelShape | None:
    """A built-in shape by name or hub id (``llama-2-70b``, ``meta-llama/Llama-2-70b-chat-hf``)."""
    key = _alias_table().get(_norm(name))
    if key is None:
        return None
    entry = BUILTIN[key]
    return from_config(entry["config"], name=key, source=f"built-in ({entry['hf']} config.json)",
                       published_params=entry["published_params"])


def _get(cfg: dict, *keys, default=None):
    for k in keys:
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    return default


def from_config(cfg: dict, *, name: str, source: str, published_params: float | None = None
                ) -> ModelShape:
    """A shape from a Hugging Face config dict; raises ValueError naming the missing key."""
    if not isinstance(cfg, dict):
        raise TypeError("config.json does not hold a JSON object")
    # Multimodal wrappers (Llava, Mllama, ...) keep the language model under text_config.
    if "num_attention_heads" not in cfg and "n_head" not in cfg and isinstance(cfg.get("text_config"), dict):
        cfg = {**cfg["text_config"], "torch_dtype": cfg.get("torch_dtype", cfg.get("dtype"))}

    def need(*keys):
        value = _get(cfg, *keys)
        if value is None:
            raise ValueError(f"missing {keys[0]!r}")
        return value

    heads = need("num_attention_heads", "n_head")
    hidden = need("hidden_size", "n_embd", "d_model")
    model_type = str(cfg.get("model_type", ""))
    gated = model_type not in _UNGATED
    default_inter = 4 * hidden if isinstance(hidden, int) else None
    return ModelShape(
        name=name,
        num_layers=need("num_hidden_layers", "n_layer", "num_layers"),
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=_get(cfg, "num_key_value_heads", "num_kv_heads", default=heads),
        intermediate_size=_get(cfg, "intermediate_size", "ffn_dim", "n_inner", default=default_inter),
        vocab_size=need("vocab_size"),
        max_position_embeddings=need("max_position_embeddings", "n_positions", "max_seq_len",
                                     "seq_length"),
        head_dim=_get(cfg, "head_dim", default=0),
        num_experts=_get(cfg, "num_local_experts", "num_experts", "n_routed_experts", default=1),
        experts_per_token=_get(cfg, "num_experts_per_tok", "moe_topk", default=1),
        moe_intermediate_size=_get(cfg, "moe_intermediate_size", default=0),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        gated_mlp=gated,
        torch_dtype=str(_get(cfg, "torch_dtype", "dtype", default="float16")),
        source=source,
        published_params=published_params,
    )


def load_config(path: str | os.PathLike, *, field_name: str = "--model") -> ModelShape:
    """Read ``config.json`` (a directory holding it, or the file); BadInput naming the field."""
    p = Path(os.path.expanduser(str(path)))
    if p.is_dir():
        p = p / "config.json"
        if not p.is_file():
            raise BadInput(field_name, f"{path} has no config.json",
                           "give a Hugging Face model directory (with config.json) or the file itself")
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise BadInput(field_name, f"{path} does not exist",
                       f"give a local model directory, its config.json, or one of: {', '.join(names())}"
                       ) from None
    except OSError as e:
        raise BadInput(field_name, f"cannot read {p}: {e.strerror}") from None
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(field_name, f"{p} is not valid JSON (line {e.lineno}: {e.msg})",
                       "give the model's Hugging Face config.json") from None
    model_name = p.parent.name if p.name == "config.json" else p.stem
    try:
        return from_config(cfg, name=model_name or str(p), source=str(p))
    except (ValueError, TypeError) as e:
        raise BadInput(field_name, f"{p}: {e}",
                       "a decoder config.json needs num_attention_heads, num_hidden_layers, "
                       "hidden_size, vocab_size and max_position_embeddings") from None


def resolve(value: str | None, *, field_name: str = "--model") -> ModelShape:
    """``--model``: an existing path (directory or config.json) wins, else a built-in name."""
    if not value:
        raise BadInput(field_name, "no model given",
                       f"use {field_name} NAME ({', '.join(names())}) or a local model directory")
    expanded = os.path.expanduser(value)
    if os.path.exists(expanded):
        return load_config(expanded, field_name=field_name)
    shape = builtin(value)
    if shape is not None:
        return shape
    if value.startswith((".", "/", "~")) or value.endswith(".json"):
        return load_config(expanded, field_name=field_name)  # raises: does not exist
    raise BadInput(field_name, f"{value!r} is neither a local path nor a built-in model",
                   f"use one of {', '.join(names())}, or a directory holding the model's "
                   "config.json (shapes are read offline, nothing is downloaded)")
