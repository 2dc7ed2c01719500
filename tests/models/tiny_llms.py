"""Tiny transformers decoders for the generation tests, built on meta (nothing is downloaded or allocated).
Their configs are the closed forms the tests check against (KV heads, head dim, layers, sliding window)."""
import torch
import transformers

EXAMPLE_INPUTS = "input_ids=2x16:int64"

# grouped-query attention: 4 query heads share 2 KV heads of 32 dims, 3 layers
LLAMA = dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False)
MISTRAL = dict(LLAMA, sliding_window=8)
# alternating sliding-window and full-attention layers (transformers runs Gemma-2 eagerly: no SDPA support)
GEMMA2 = dict(LLAMA, num_hidden_layers=4, head_dim=32, sliding_window=8)
GPT2 = dict(vocab_size=512, n_embd=128, n_layer=2, n_head=4, n_positions=4096)


def _on_meta(cls, config, attention: str = "sdpa"):
    config._attn_implementation = attention
    with torch.device("meta"):
        return cls(config)


def TinyLlama():
    return _on_meta(transformers.LlamaForCausalLM, transformers.LlamaConfig(**LLAMA))


def ShortLlama():
    """A Llama built for 64 positions (the positions warning)."""
    return _on_meta(transformers.LlamaForCausalLM, transformers.LlamaConfig(**dict(LLAMA, max_position_embeddings=64)))


def TinyMistral():
    return _on_meta(transformers.MistralForCausalLM, transformers.MistralConfig(**MISTRAL))


def TinyGemma2():
    return _on_meta(transformers.Gemma2ForCausalLM, transformers.Gemma2Config(**GEMMA2), "eager")


def TinyGPT2():
    return _on_meta(transformers.GPT2LMHeadModel, transformers.GPT2Config(**GPT2))


def TinyT5():
    return _on_meta(transformers.T5ForConditionalGeneration,
                    transformers.T5Config(vocab_size=512, d_model=128, d_ff=256, num_layers=2, num_heads=4, d_kv=32))
