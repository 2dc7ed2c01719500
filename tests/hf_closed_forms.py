"""Parameter counts of the bundled Hugging Face architectures in closed form, from their config numbers alone
(written from the architectures' papers and layer lists, not from transformers' code paths): tests compare
them with what transformers builds from the same config. Each function takes the config dict as bundled in
resources/hf_models.toml."""
from __future__ import annotations


def _decoder_lm(c: dict, *, qkv_bias: bool = False, norms_per_layer: int = 2, experts: int = 0) -> int:
    """Llama-family decoder: embeddings, per layer q/k/v/o (GQA), a SwiGLU MLP (gate, up, down) or `experts`
    of them plus a router, RMSNorm weights; a final norm; an LM head unless tied."""
    d, layers, heads, vocab, inter = (c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                                      c["vocab_size"], c["intermediate_size"])
    kv = c.get("num_key_value_heads", heads)
    hd = c.get("head_dim", d // heads)
    attention = d * heads * hd + 2 * d * kv * hd + heads * hd * d + ((heads + 2 * kv) * hd if qkv_bias else 0)
    mlp = 3 * d * inter
    if experts:
        mlp = experts * mlp + d * experts
    per_layer = attention + mlp + norms_per_layer * d
    tied = c.get("tie_word_embeddings", False)
    return vocab * d + layers * per_layer + d + (0 if tied else vocab * d)


def llama(c): return _decoder_lm(c)
def mistral(c): return _decoder_lm(c)
def qwen2(c): return _decoder_lm(c, qkv_bias=True)
def mixtral(c): return _decoder_lm(c, experts=c["num_local_experts"])
def gemma2(c): return _decoder_lm(c, norms_per_layer=4)     # input, post-attention, pre- and post-feedforward
def phi3(c): return _decoder_lm(c)                          # fused qkv and gate_up: the same counts


def gpt2(c: dict) -> int:
    """GPT-2: token + position embeddings; per layer two LayerNorms, c_attn d->3d, c_proj d->d, an MLP d->4d->d
    (all with biases); a final LayerNorm; the LM head tied to the token embedding."""
    d, layers, vocab, positions = c["n_embd"], c["n_layer"], c["vocab_size"], c["n_positions"]
    inner = c.get("n_inner") or 4 * d
    per_layer = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * inner + inner) + (inner * d + d)
    return vocab * d + positions * d + layers * per_layer + 2 * d


def _bert_encoder(c: dict) -> int:
    d, inter = c["hidden_size"], c["intermediate_size"]
    per_layer = 4 * (d * d + d) + 2 * d + (d * inter + inter) + (inter * d + d) + 2 * d
    embeddings = (c["vocab_size"] + c["max_position_embeddings"] + c["type_vocab_size"]) * d + 2 * d
    return embeddings + c["num_hidden_layers"] * per_layer


def bert(c: dict) -> int:
    """BertForMaskedLM: the encoder without pooler, the MLM head's transform (dense + LayerNorm) and its output
    bias (the output weight is the tied word embedding)."""
    d = c["hidden_size"]
    return _bert_encoder(c) + (d * d + d) + 2 * d + c["vocab_size"]


def roberta(c: dict) -> int:
    """RobertaForMaskedLM: BERT's layout (one token type), LM head dense + LayerNorm + output bias."""
    return bert(c)


def t5(c: dict) -> int:
    """T5 v1.0: shared embedding; encoder blocks (self-attention q/k/v/o without biases, FF wi/wo, two RMS
    norms), decoder blocks (self-attention, cross-attention, FF, three norms), a relative-position bias table
    (buckets x heads) in each stack's first block, each stack's final norm; the LM head tied."""
    d, ff, heads, d_kv = c["d_model"], c["d_ff"], c["num_heads"], c["d_kv"]
    inner = heads * d_kv
    attention = 4 * d * inner
    encoder_layer = attention + 2 * d * ff + 2 * d
    decoder_layer = 2 * attention + 2 * d * ff + 3 * d
    bias = c["relative_attention_num_buckets"] * heads
    encoder_layers = c["num_layers"]
    decoder_layers = c.get("num_decoder_layers", encoder_layers)
    return (c["vocab_size"] * d + encoder_layers * encoder_layer + bias + d
            + decoder_layers * decoder_layer + bias + d)


def _vit_layers(d: int, inter: int, layers: int, qkv_bias: bool = True) -> int:
    per_layer = 3 * d * d + (3 * d if qkv_bias else 0) + (d * d + d) + 2 * 2 * d + (d * inter + inter) + (inter * d + d)
    return layers * per_layer


def vit(c: dict) -> int:
    """ViTForImageClassification: patch convolution (with bias), [CLS] token, position embeddings for the patches
    and [CLS], the encoder, a final LayerNorm, the classifier (no pooler)."""
    d, patch, channels = c["hidden_size"], c["patch_size"], c["num_channels"]
    patches = (c["image_size"] // patch) ** 2
    embeddings = channels * patch * patch * d + d + d + (patches + 1) * d
    return (embeddings + _vit_layers(d, c["intermediate_size"], c["num_hidden_layers"], c["qkv_bias"]) + 2 * d
            + d * c["num_labels"] + c["num_labels"])


def clip(c: dict) -> int:
    """CLIPModel: the text tower (token + position embeddings, pre-LN layers, final LayerNorm), the vision tower
    (class embedding, patch convolution without bias, position embeddings, pre- and post-LayerNorm), both
    projections without bias, and the logit scale."""
    t, v, proj = c["text_config"], c["vision_config"], c["projection_dim"]
    dt, dv = t["hidden_size"], v["hidden_size"]
    text = (t["vocab_size"] + t["max_position_embeddings"]) * dt + _vit_layers(
        dt, t["intermediate_size"], t["num_hidden_layers"]) + 2 * dt
    patches = (v["image_size"] // v["patch_size"]) ** 2
    vision = (dv + v["num_channels"] * v["patch_size"] ** 2 * dv + (patches + 1) * dv + 2 * dv
              + _vit_layers(dv, v["intermediate_size"], v["num_hidden_layers"]) + 2 * dv)
    return text + vision + dt * proj + dv * proj + 1


def whisper(c: dict) -> int:
    """WhisperForConditionalGeneration: encoder (two convolutions of kernel 3 over the mel bins, sinusoidal
    positions stored as a table, layers with a bias-free key projection, a final LayerNorm); decoder (token and
    learned position embeddings, layers with self- and cross-attention, a final LayerNorm); the output projection
    tied to the token embedding."""
    d, vocab = c["d_model"], c["vocab_size"]
    attention = 4 * d * d + 3 * d                 # q, v, out with biases; k without
    encoder_layer = attention + 2 * d + (d * c["encoder_ffn_dim"] + c["encoder_ffn_dim"]) + (
        c["encoder_ffn_dim"] * d + d) + 2 * d
    decoder_layer = 2 * attention + 3 * 2 * d + (d * c["decoder_ffn_dim"] + c["decoder_ffn_dim"]) + (
        c["decoder_ffn_dim"] * d + d)
    encoder = (c["num_mel_bins"] * d * 3 + d) + (d * d * 3 + d) + c["max_source_positions"] * d + c[
        "encoder_layers"] * encoder_layer + 2 * d
    decoder = vocab * d + c["max_target_positions"] * d + c["decoder_layers"] * decoder_layer + 2 * d
    return encoder + decoder


PARAMS = {"llama": llama, "mistral": mistral, "qwen2": qwen2, "mixtral": mixtral, "gemma2": gemma2, "phi3": phi3,
          "gpt2": gpt2, "bert": bert, "roberta": roberta, "t5": t5, "vit": vit, "clip": clip, "whisper": whisper}


def expected_params(config: dict) -> int:
    return PARAMS[config["model_type"]](config)
