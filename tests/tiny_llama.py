"""A real, tiny, randomly initialised transformers Llama over a character vocabulary, built from a
config (no download, fp32, CPU): the model of the tests that need transformers' own forward pass
without the 135M model (tests/test_gpu_engine.py, tests/test_rl_parity.py)."""

from __future__ import annotations

import string

import torch

CHARS = ["<pad>", "<eos>", "<unk>"] + list(string.printable[:95])
TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def tiny_llama(max_positions: int = 128):
    """(model, tokenizer): one layer, hidden 32, 4 heads over 2 KV heads, seeded weights; pad id 0,
    eos id 1, a plain chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(CHARS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    tokenizer.chat_template = TEMPLATE
    config = LlamaConfig(
        vocab_size=len(CHARS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config), tokenizer
