"""Tiny transformers mixture-of-experts decoders for the MoE tests, built on meta (nothing is downloaded or
allocated). Their configs are the closed forms the tests check against (experts, top-k, expert and shared
expert sizes). ``experts`` picks transformers' expert implementation: "grouped_mm" (its default), "eager"
(a loop over the hit experts) or "batched_mm"."""
import torch
import transformers

EXAMPLE_INPUTS = "input_ids=2x16:int64"

# 8 experts, top-2, SwiGLU experts of 96 (Mixtral-8x7B's shape, scaled down), grouped-query attention
MIXTRAL = dict(vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=4096,
               tie_word_embeddings=False)
# 6 routed experts, top-4, plus a gated shared expert (Qwen1.5-MoE / DeepSeek-MoE style); normalised top-k
QWEN2_MOE = dict(vocab_size=512, hidden_size=64, intermediate_size=160, moe_intermediate_size=48,
                 shared_expert_intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, num_experts=6, num_experts_per_tok=4, norm_topk_prob=True,
                 decoder_sparse_step=1, max_position_embeddings=4096, tie_word_embeddings=False)


def _on_meta(cls, config, experts: str):
    config._attn_implementation = "sdpa"
    config._experts_implementation = experts
    with torch.device("meta"):
        return cls(config)


def TinyMixtral(experts: str = "grouped_mm"):
    return _on_meta(transformers.MixtralForCausalLM, transformers.MixtralConfig(**MIXTRAL), experts)


def TinyMixtralEager():
    return TinyMixtral("eager")


def TinyQwen2Moe(experts: str = "grouped_mm"):
    return _on_meta(transformers.Qwen2MoeForCausalLM, transformers.Qwen2MoeConfig(**QWEN2_MOE), experts)


def TinyQwen2MoeEager():
    return TinyQwen2Moe("eager")
