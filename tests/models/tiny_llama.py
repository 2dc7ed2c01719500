"""A tiny Llama (transformers' LlamaForCausalLM) built on the meta device, for the fine-tuning tests:
hidden 64, 2 layers, 4 heads (2 KV heads), MLP 128, vocabulary 256, untied head."""
import torch
from transformers import LlamaConfig, LlamaForCausalLM

EXAMPLE_INPUTS = "2x32:int64"
CONFIG = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False)


def config() -> LlamaConfig:
    return LlamaConfig(**CONFIG)


def TinyLlama():  # noqa: N802  (the name a model spec refers to)
    with torch.device("meta"):
        return LlamaForCausalLM(config())
