"""Hugging Face models by name (bundled configs), by config.json, and timm names: built on meta, offline, with
inputs by meaning; parameter counts against the architectures' closed forms (tests/hf_closed_forms.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from torchbudget.cli import run_cli
from torchbudget.engine import hf_catalog, trace_store
from torchbudget.engine.api import analyze_workload
from torchbudget.engine.errors import UnknownModelError
from torchbudget.engine.hf_catalog import bundled_models, find_bundled
from torchbudget.engine.inputs import InputSpec
from torchbudget.engine.results import MemoryCategory, TraceOptions
from torchbudget.engine.sources import load_model
from torchbudget.engine.workload import Workload
from tests.hf_closed_forms import expected_params

ROOT = Path(__file__).resolve().parent.parent
UNET = ROOT / "tests" / "models" / "sd_unet.py"
# a Llama-architecture decoder small enough to trace in a fraction of a second (--kwargs: config fields)
TINY_LLAMA = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 1000, "bos_token_id": 0, "eos_token_id": 0}


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = run_cli(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_json(capsys, *argv: str) -> dict:
    code, out, err = cli(capsys, *argv, "--json", "--no-store")
    assert code == 0, err
    return json.loads(out)


def one_line_error(capsys, *argv: str) -> str:
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, (code, out, err)
    assert "Traceback" not in err
    return err


# ---------------------------------------------------------------------------------------- the catalog
REQUIRED = {"meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B", "meta-llama/Llama-3.2-1B",
            "meta-llama/Llama-3.2-3B", "mistralai/Mistral-7B-v0.1", "mistralai/Mixtral-8x7B-v0.1",
            "Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-72B", "google/gemma-2-9b",
            "microsoft/Phi-3-mini-4k-instruct", "openai-community/gpt2", "openai-community/gpt2-medium",
            "openai-community/gpt2-large", "openai-community/gpt2-xl", "google-bert/bert-base-uncased",
            "google-bert/bert-large-uncased", "FacebookAI/roberta-base", "google-t5/t5-small", "google-t5/t5-base",
            "google/vit-base-patch16-224", "openai/clip-vit-base-patch32", "openai/whisper-small"}


def test_the_catalog_has_the_required_models_each_with_its_source():
    models = bundled_models()
    assert {m.hub_id for m in models} >= REQUIRED
    for m in models:
        assert m.source == f"https://huggingface.co/{m.hub_id}/blob/main/config.json"
        assert m.config["model_type"] and m.architecture and m.aliases
    names = [n.lower() for m in models for n in (m.hub_id, *m.aliases)]
    assert len(names) == len(set(names)), "a name must not stand for two models"


@pytest.mark.parametrize("model", bundled_models(), ids=lambda m: m.hub_id)
def test_bundled_params_equal_the_closed_form_and_transformers_own_build(model):
    """Every bundled config: our load (by name) == transformers' own model from the same config (built on meta
    here, independently) == the architecture's closed form."""
    import torch
    import transformers

    loaded = load_model(model.hub_id)
    ours = sum(p.numel() for p in loaded.module.parameters())
    fields = {k: v for k, v in model.config.items() if k != "model_type"}
    config = transformers.AutoConfig.for_model(model.config["model_type"], **fields)
    with torch.device("meta"):
        theirs = getattr(transformers, model.architecture)(config)
    assert ours == sum(p.numel() for p in theirs.parameters()) == expected_params(dict(model.config))
    assert {p.device.type for p in loaded.module.parameters()} == {"meta"}


@pytest.mark.parametrize("name, published", [
    # totals the model cards / safetensors indexes state (a second, independent source for a few)
    ("meta-llama/Llama-3.1-8B", 8_030_261_248), ("mistralai/Mixtral-8x7B-v0.1", 46_702_792_704),
    ("openai-community/gpt2", 124_439_808), ("google-t5/t5-small", 60_506_624),
    ("openai/whisper-small", 241_734_912), ("google/vit-base-patch16-224", 86_567_656),
])
def test_published_parameter_counts(name, published):
    assert expected_params(dict(find_bundled(name).config)) == published


def test_names_are_case_insensitive_and_aliases_name_the_same_model():
    assert find_bundled("META-LLAMA/llama-3.1-8b") is find_bundled("llama-3.1-8b") is \
        find_bundled("meta-llama/Llama-3.1-8B")
    loaded = load_model("Gpt2")
    assert loaded.name == "openai-community/gpt2" and loaded.family == "huggingface"


def test_list_shows_every_source_grouped(capsys):
    code, out, _ = cli(capsys, "analyze", "--list")
    assert code == 0
    groups = out.split("\n\n")
    assert groups[0].startswith("# torchvision") and "resnet50" in groups[0].split()
    assert groups[1].startswith("# Hugging Face") and REQUIRED <= set(groups[1].split())
    data = cli_json(capsys, "analyze", "--list")
    assert set(data["huggingface"]) >= REQUIRED and "resnet50" in data["torchvision"]


# ------------------------------------------------------------------------------------------ bad input
def test_unknown_hub_id_says_so_with_close_matches(capsys):
    err = one_line_error(capsys, "analyze", "meta-llama/Llama-3.1-9B")
    assert "unknown model 'meta-llama/Llama-3.1-9B'" in err and "not a bundled" in err
    assert "meta-llama/Llama-3.1-8B" in err


def test_unknown_short_name_lists_close_matches(capsys):
    err = one_line_error(capsys, "analyze", "llama-3.1-9b")
    assert "llama-3.1-8b" in err


def test_config_json_with_missing_fields_names_them(capsys, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 256,
                                "num_hidden_layers": 2, "vocab_size": 1000}))
    err = one_line_error(capsys, "analyze", str(path))
    assert "lacks intermediate_size, num_attention_heads" in err and "LlamaConfig" in err


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "not a config.json"),
    ('{"hidden_size": 8}', "has no \"model_type\""),
    ('{"model_type": "no-such-arch"}', "model_type 'no-such-arch' is not an architecture"),
    ('{"model_type": "llama", "auto_map": {"AutoModel": "x.Y"}}', "needs the model's own code"),
])
def test_bad_config_json_is_one_line(capsys, tmp_path, content, fragment):
    path = tmp_path / "config.json"
    path.write_text(content)
    assert fragment in one_line_error(capsys, "analyze", str(path))


def test_missing_config_file_and_folder_without_one(capsys, tmp_path):
    assert "does not exist" in one_line_error(capsys, "analyze", str(tmp_path / "nope" / "config.json"))
    assert "has no config.json" in one_line_error(capsys, "analyze", str(tmp_path))


def test_misspelt_config_field_in_kwargs_is_named(capsys):
    err = one_line_error(capsys, "analyze", "gpt2", "--kwargs", '{"n_layers": 2}')
    assert "'n_layers' is not a GPT2Config field" in err and "n_layer" in err


def test_sequence_longer_than_learned_positions_says_why_it_broke(capsys):
    err = one_line_error(capsys, "analyze", "bert-base", "--seq-len", "1024", "--kwargs", '{"num_hidden_layers": 1}')
    assert "sequence length 1,024 is above the 512 positions bert-base has" in err


# ------------------------------------------------------------------------------- config.json and folders
def test_a_model_folder_is_read_for_its_config_only(capsys, tmp_path):
    config = dict(find_bundled("gpt2").config, architectures=["GPT2LMHeadModel"], n_layer=2)
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"not weights: never read")
    data = cli_json(capsys, "analyze", str(tmp_path))
    assert data["totals"]["params"] == expected_params(config)
    assert data["inputs"][0]["shape"] == [1, 1024] and data["inputs"][0]["name"] == "input_ids"


def test_a_config_json_without_architectures_builds_the_causal_lm(tmp_path):
    config = {k: v for k, v in find_bundled("llama-3.2-1b").config.items()}
    config.update(TINY_LLAMA, tie_word_embeddings=False)
    path = tmp_path / "my-model.json"
    path.write_text(json.dumps(config))
    loaded = load_model(str(path))
    assert type(loaded.module).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in loaded.module.parameters()) == expected_params(config)


# ------------------------------------------------------------------------------------ inputs by meaning
def test_t5_analyses_with_no_input(capsys):
    data = cli_json(capsys, "analyze", "t5-small", "--kwargs", '{"num_layers": 1}')
    assert [(i["name"], i["shape"], i["dtype"]) for i in data["inputs"]] == [
        ("input_ids", [1, 512], "int64"), ("decoder_input_ids", [1, 128], "int64")]
    # the LM head's output: 128 target positions x 32128 vocabulary, fp32
    assert data["totals"]["output_bytes"] >= 128 * 32128 * 4


def test_clip_analyses_with_no_input(capsys):
    data = cli_json(capsys, "analyze", "openai/clip-vit-base-patch32", "--kwargs",
                    '{"text_config": {"num_hidden_layers": 1}, "vision_config": {"num_hidden_layers": 1}}')
    assert [(i["name"], i["shape"]) for i in data["inputs"]] == [("input_ids", [1, 77]),
                                                                  ("pixel_values", [1, 3, 224, 224])]


def test_whisper_analyses_with_no_input(capsys):
    data = cli_json(capsys, "analyze", "whisper-small", "--kwargs", '{"encoder_layers": 1, "decoder_layers": 1}')
    # 80 mel bins x 3000 frames (30 s: two convolutions, the second of stride 2, give its 1500 positions)
    assert [(i["name"], i["shape"], i["dtype"]) for i in data["inputs"]] == [
        ("input_features", [1, 80, 3000], "float32"), ("decoder_input_ids", [1, 128], "int64")]


def test_an_sd_style_unet_analyses_with_no_input(capsys):
    """diffusers is not a dependency: tests/models/sd_unet.py has UNet2DConditionModel's forward signature and
    config names, which is all the defaults read."""
    data = cli_json(capsys, "analyze", f"{UNET}:TinyUNet2DCondition", "--no-isolation")
    assert [(i["name"], i["shape"], i["dtype"]) for i in data["inputs"]] == [
        ("sample", [1, 4, 32, 32], "float32"), ("timestep", [1], "int64"),
        ("encoder_hidden_states", [1, 77, 64], "float32")]
    data = cli_json(capsys, "analyze", f"{UNET}:TinyUNet2DCondition", "--no-isolation", "--batch", "3")
    assert [i["shape"][0] for i in data["inputs"]] == [3, 3, 3]


def test_batch_seq_len_and_target_len_size_the_default_inputs(capsys):
    data = cli_json(capsys, "analyze", "t5-small", "--kwargs", '{"num_layers": 1}', "--batch", "2", "--seq-len", "64",
                    "--target-len", "16")
    assert [i["shape"] for i in data["inputs"]] == [[2, 64], [2, 16]]
    assert "--seq-len needs a token input" in one_line_error(capsys, "analyze", "resnet18", "--seq-len", "64")
    assert "--target-len needs an encoder-decoder" in one_line_error(capsys, "analyze", "gpt2", "--target-len", "8")


def test_forward_kwargs_reach_forward(capsys):
    """logits_to_keep=1: the LM head runs on the last position only (1 x 1 x vocab logits)."""
    base = ("analyze", "llama-3.2-1b", "--kwargs", json.dumps(TINY_LLAMA), "--seq-len", "32")
    full = cli_json(capsys, *base)
    last = cli_json(capsys, *base, "--forward-kwargs", '{"logits_to_keep": 1}')
    assert full["totals"]["output_bytes"] == 32 * 1000 * 4 and last["totals"]["output_bytes"] == 1000 * 4
    lm_head = 64 * 1000
    assert full["totals"]["macs"] - last["totals"]["macs"] == 31 * lm_head


def test_timm_names_build_on_meta_with_timm_own_count():
    timm = pytest.importorskip("timm")
    loaded = load_model("timm/resnet18")
    assert loaded.default_inputs == (InputSpec((1, 3, 224, 224)),)
    assert sum(p.numel() for p in loaded.module.parameters()) == sum(
        p.numel() for p in timm.create_model("resnet18", pretrained=False).parameters())
    with pytest.raises(UnknownModelError, match="is not a timm model; did you mean timm/resnet18"):
        load_model("timm/resnet19")


# ------------------------------------------------------------------------------------------- use_cache
def test_training_keeps_no_kv_cache_although_the_config_says_use_cache():
    """Gemma-2 (eager attention, 2 query heads per KV head): with use_cache the cache would hold the un-repeated
    keys and values on top of what backward saves. The config says use_cache=True; the default trace equals the
    use_cache=False one, and asking for the cache adds at least its closed form to the activations."""
    config = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 1000, "pad_token_id": 0, "bos_token_id": 0,
              "eos_token_id": 0, "use_cache": True}
    inputs = (InputSpec((2, 128), "int64", "input_ids"),)

    def activations(forward_kwargs):
        result = analyze_workload(Workload("gemma-2-9b", inputs, TraceOptions(mode="train"), config, forward_kwargs))
        assert not [e for e in result.storage_events if e.category is MemoryCategory.KV_CACHE]
        return sum(e.nbytes for e in result.storage_events
                   if e.kind == "alloc" and e.category is MemoryCategory.ACTIVATIONS)

    default, without, with_cache = activations({}), activations({"use_cache": False}), activations({"use_cache": True})
    kv_cache = 2 * 2 * 2 * 2 * 128 * 16 * 4      # keys + values x layers x batch x KV heads x tokens x head dim x fp32
    assert default == without and with_cache - default >= kv_cache


# ------------------------------------------------------------------------------------------ trace store
def test_the_store_keeps_registry_models_and_keys_a_bundled_config_by_its_content(tmp_path, monkeypatch):
    storable = trace_store.storable
    assert storable(Workload("resnet50")) and storable(Workload("meta-llama/Llama-3.1-8B"))
    assert storable(Workload("llama-3.1-8b")) and storable(Workload("timm/vit_base_patch16_224.augreg_in21k"))
    assert not storable(Workload(str(tmp_path / "config.json"))) and not storable(Workload("net.py:Net"))
    store = trace_store.TraceStore(tmp_path)
    workload = Workload("gpt2", (InputSpec((1, 8), "int64", "input_ids"),))
    before = store.path_for(workload)
    original = hf_catalog.model_digest
    monkeypatch.setattr(hf_catalog, "model_digest", lambda name: original(name) + "-edited")
    assert store.path_for(workload) != before


def test_editing_a_bundled_entry_changes_its_digest(monkeypatch):
    text = hf_catalog._catalog_text()
    digest, other = find_bundled("gpt2").digest, find_bundled("gpt2-medium").digest
    monkeypatch.setattr(hf_catalog, "_catalog_text", lambda: text.replace("n_layer = 12,", "n_layer = 11,", 1))
    for cached in (hf_catalog.bundled_models, hf_catalog._index):
        cached.cache_clear()
    try:
        assert find_bundled("gpt2").config["n_layer"] == 11 and find_bundled("gpt2").digest != digest
        assert find_bundled("gpt2-medium").digest == other
    finally:
        monkeypatch.undo()
        for cached in (hf_catalog.bundled_models, hf_catalog._index):
            cached.cache_clear()


# ------------------------------------------------------------------------- an independent FLOP counter
@pytest.mark.parametrize("name, kwargs, sizes", [
    ("gpt2", {"n_layer": 2, "n_embd": 64, "n_head": 4}, ("--seq-len", "48")),
    ("llama-3.2-1b", {k: v for k, v in TINY_LLAMA.items() if not k.endswith("token_id")}, ("--seq-len", "48")),
    ("t5-small", {"num_layers": 1, "d_model": 64, "d_ff": 128, "num_heads": 4, "d_kv": 16},
     ("--seq-len", "48", "--target-len", "16")),
    ("whisper-small", {"encoder_layers": 1, "decoder_layers": 1, "d_model": 64, "encoder_attention_heads": 4,
                       "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128,
                       "max_source_positions": 100}, ("--target-len", "16")),
])
def test_macs_by_name_equal_flop_counter_mode_on_transformers_own_model(capsys, name, kwargs, sizes):
    """analyze by name with inputs by meaning == torch.utils.flop_counter.FlopCounterMode / 2 on transformers' own
    model from the same config, run for real on CPU with the inputs analyze chose (eager attention there, so
    FlopCounterMode sees the attention matmuls; the trace's SDPA does the same products)."""
    import torch
    import transformers
    from torch.utils.flop_counter import FlopCounterMode

    data = cli_json(capsys, "analyze", name, "--kwargs", json.dumps(kwargs), "--batch", "2", *sizes)
    assert all(i["shape"][0] == 2 for i in data["inputs"])
    model = find_bundled(name)
    fields = {k: v for k, v in model.config.items() if k != "model_type"}
    fields.update(kwargs)
    config = transformers.AutoConfig.for_model(model.config["model_type"], attn_implementation="eager", **fields)
    real = getattr(transformers, model.architecture)(config).eval()
    inputs = {i["name"]: torch.zeros(i["shape"], dtype=getattr(torch, i["dtype"])) for i in data["inputs"]}
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        real(**inputs, use_cache=False)
    assert counter.get_total_flops() == 2 * data["totals"]["macs"]


def test_docs_list_every_bundled_config_with_its_source():
    text = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    for m in bundled_models():
        assert f"[`{m.hub_id}`]({m.source})" in text, m.hub_id
        assert f"{expected_params(dict(m.config)):,}" in text, m.hub_id
