"""The workload arguments every tracing subcommand takes; choices and help come from engine.vocab."""
from __future__ import annotations

import argparse
import json

from torchbudget.cli.isolation import DEFAULT_TIMEOUT_S
from torchbudget.engine import vocab
from torchbudget.errors import UserError


def _choices_help(terms) -> str:
    return "; ".join(f"{t.name}: {t.tip}" for t in terms)


def add_workload_arguments(parser: argparse.ArgumentParser, *, target: bool = False, sizes: bool = True) -> None:
    """MODEL and how it runs. ``target``: also ``--target`` (analyze; plan/compare/sweep take the GPU's).
    ``sizes``: also ``--batch N`` and ``--seq-len N`` (sweep has its own lists)."""
    parser.add_argument("model", nargs="?", metavar="MODEL",
                        help="torchvision name (resnet50), Hugging Face hub id or alias (meta-llama/Llama-3.1-8B, "
                             "gpt2), path/to/config.json or model folder, timm/NAME, or path/to/file.py:Name")
    parser.add_argument("--input", action="append", metavar="SHAPE",
                        help="input shape, e.g. 8x3x224x224 or ids=8x128:int64 (repeatable); default: the model's")
    if sizes:
        parser.add_argument("--batch", type=int, default=None, metavar="N",
                            help="batch size of every input (default: the input's own, 1 for the model's defaults)")
        parser.add_argument("--seq-len", type=int, default=None, metavar="N",
                            help="tokens per sequence of the token inputs (ids, masks; an encoder-decoder's encoder)")
    parser.add_argument("--target-len", type=int, default=None, metavar="N",
                        help="an encoder-decoder's target tokens (decoder_input_ids: T5, Whisper)")
    parser.add_argument("--mode", default="infer", choices=vocab.MODE_NAMES, help=_choices_help(vocab.MODES))
    parser.add_argument("--precision", "--dtype", dest="precision", default="fp32", choices=vocab.PRECISION_NAMES,
                        help=_choices_help(vocab.PRECISIONS))
    parser.add_argument("--optimizer", default="adamw", choices=(*vocab.OPTIMIZER_NAMES, vocab.NO_OPTIMIZER),
                        help="optimizer of the training step (default adamw; none: no optimizer step)")
    parser.add_argument("--optimizer-impl", default="auto", choices=vocab.OPTIMIZER_IMPL_NAMES,
                        help=_choices_help(vocab.OPTIMIZER_IMPLS))
    parser.add_argument("--checkpointing", action="store_true", help="training with activation checkpointing")
    parser.add_argument("--attention", default="auto", choices=vocab.ATTENTION_NAMES,
                        help=_choices_help(vocab.ATTENTION_BACKENDS))
    parser.add_argument("--convention", default="default", choices=vocab.CONVENTION_NAMES,
                        help=_choices_help(vocab.CONVENTIONS))
    llm = parser.add_argument_group("transformers and LLMs")
    if sizes:
        llm.add_argument("--context", dest="context_len", type=int, default=0, metavar="TOKENS",
                         help="--mode decode: tokens already in the KV cache")
    else:   # sweep: a list is its context axis (read by context_values)
        llm.add_argument("--context", dest="context_len", default=0, metavar="LIST",
                         help="--mode decode: tokens already in the KV cache; several (1024,2048,4096) are the "
                              "sweep's axis (--batch N then fixes the batch), one fixes the batch sweep's context")
    llm.add_argument("--kv-dtype", default="auto", choices=vocab.KV_DTYPE_NAMES, help=_choices_help(vocab.KV_DTYPES))
    llm.add_argument("--base-dtype", default="auto", choices=vocab.BASE_DTYPE_NAMES,
                     help=_choices_help(vocab.BASE_DTYPES))
    llm.add_argument("--lora-rank", type=int, default=None, metavar="R", help="LoRA adapters of rank R (R >= 1)")
    llm.add_argument("--lora-targets", default=None, metavar="NAMES",
                     help="comma-separated module names the adapters go on (default: the model family's attention "
                          "projections)")
    llm.add_argument("--freeze", default=None, metavar="PATTERNS",
                     help="comma-separated parameter-name globs made non-trainable, e.g. 'embed*,layers.0.*'")
    llm.add_argument("--grad-accum", type=int, default=1, metavar="K", help="training: micro-batches per optimizer step")
    llm.add_argument("--moe-routing", default="balanced", choices=vocab.MOE_ROUTING_NAMES,
                     help=_choices_help(vocab.MOE_ROUTINGS))
    llm.add_argument("--attention-flops", default="full", choices=vocab.ATTENTION_FLOPS_NAMES,
                     help=_choices_help(vocab.ATTENTION_FLOPS))
    llm.add_argument("--forward-kwargs", default=None, metavar="JSON",
                     help='non-tensor forward() arguments, e.g. \'{"output_attentions": false}\'')
    dist = parser.add_argument_group("several GPUs (docs/distributed.md)")
    dist.add_argument("--world-size", type=_world_size, default=1, metavar="N",
                      help="GPUs in the job (needs --strategy); memory and fits are then per rank. auto: the "
                           "fewest GPUs at which the strategy fits")
    dist.add_argument("--strategy", default="none", metavar="NAME",
                      help=_choices_help(vocab.STRATEGIES) + "; compare takes several, comma-separated, and "
                           "auto (with --world-size auto) tries " + ", ".join(AUTO_STRATEGIES))
    dist.add_argument("--tp", dest="tp_size", type=int, default=1, metavar="N",
                      help="tensor-parallel degree (fsdp+tp: TP within groups of N, FSDP across them; tp: the world size)")
    dist.add_argument("--sequence-parallel", action="store_true",
                      help="tp / fsdp+tp: norms and residuals sharded along the sequence")
    if target:
        parser.add_argument("--target", default=vocab.DEFAULT_TARGET, metavar="DEVICE",
                            help=f"whose kernels to model: a CUDA compute capability (sm90, sm80, sm75) or cpu "
                                 f"(default {vocab.DEFAULT_TARGET}: {vocab.DEFAULT_TARGET_LABEL})")
    parser.add_argument("--kwargs", default=None, metavar="JSON", help='builder arguments, e.g. \'{"num_classes": 10}\'')
    parser.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help=f"a model file runs in its own process, stopped after this many seconds "
                             f"(default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--no-isolation", action="store_true",
                        help="run a model file in this process (for debugging it: no timeout, no crash protection)")
    parser.add_argument("--no-store", action="store_true",
                        help="neither read nor write the trace store (the app's and the CLI's traces on disk, "
                             "reused by the same torch and TorchBudget: a stored workload answers without "
                             "importing PyTorch)")


# what ``--strategy auto`` tries: a replica, sharded optimizer state, full sharding, and sharding + TP
AUTO_STRATEGIES = ("ddp", "zero1", "fsdp", "fsdp+tp")
AUTO = "auto"


def _world_size(text: str):
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of GPUs or auto, got {text!r}") from None


def strategies_from_args(args: argparse.Namespace) -> tuple[str, ...]:
    """--strategy as a tuple of strategy names (one unless comma-separated; auto: AUTO_STRATEGIES, for
    inference the ones that run it, for prefill/decode tp). An unknown name is one UserError."""
    names = [n.strip() for n in str(args.strategy).split(",") if n.strip()] or ["none"]
    if [n.lower() for n in names] == [AUTO]:
        if args.world_size != AUTO:
            raise UserError("--strategy auto picks the strategy that needs the fewest GPUs: use it with "
                            "--world-size auto", field="strategy")
        mode = vocab.normalise_mode(args.mode)
        if vocab.is_generation(mode):   # serving shards with tensor parallel only
            return tuple(s.name for s in vocab.STRATEGIES if s.serves)
        training = vocab.is_training(mode)
        return tuple(n for n in AUTO_STRATEGIES if training or not vocab.strategy(n).training_only)
    chosen = tuple(dict.fromkeys(vocab.normalise_strategy(n) for n in names))
    if args.world_size == AUTO and "none" in chosen:
        raise UserError(f"--world-size auto needs --strategy (one, several, or auto to try "
                        f"{', '.join(AUTO_STRATEGIES)})", field="world_size")
    if len(chosen) > 1 and "none" in chosen:
        raise UserError("--strategy none (one GPU) cannot be listed with other strategies", field="strategy")
    return chosen


def tp_from_args(args: argparse.Namespace) -> int:
    """The tensor-parallel degree a list of strategies uses for fsdp+tp (--tp, else solve.DEFAULT_TP)."""
    from torchbudget.engine.distributed.solve import DEFAULT_TP

    return args.tp_size if args.tp_size != 1 else DEFAULT_TP


def trace_cache_from_args(args: argparse.Namespace):
    """The trace cache a command uses: backed by the on-disk trace store unless --no-store."""
    from torchbudget.engine.cache import TraceCache
    from torchbudget.engine.trace_store import TraceStore

    return TraceCache(store=None if getattr(args, "no_store", False) else TraceStore())


ALLOC_CONF_ENV = "PYTORCH_CUDA_ALLOC_CONF"


def add_planner_arguments(parser: argparse.ArgumentParser) -> None:
    """The planner's knobs (engine.overheads.Overheads) a user may want to change."""
    parser.add_argument("--alloc-conf", default=None, metavar="SETTINGS",
                        help="caching-allocator settings in PYTORCH_CUDA_ALLOC_CONF syntax, e.g. "
                             "expandable_segments:True,max_split_size_mb:128 (default: $PYTORCH_CUDA_ALLOC_CONF, "
                             "else PyTorch's defaults)")
    parser.add_argument("--cuda-context-mib", type=float, default=None, metavar="MIB",
                        help="memory the CUDA context takes (default 512; `validate` measures yours)")


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """How the GPUs of a --world-size job are joined (hardware.cluster; defaults: the GPU's own link)."""
    group = parser.add_argument_group("cluster (with --world-size)")
    group.add_argument("--gpus-per-node", type=int, default=None, metavar="N",
                       help="GPUs per node (default: min(world size, 8))")
    group.add_argument("--interconnect", default=None, metavar="NAME",
                       help="the link inside a node, e.g. 'NVLink 4', 'PCIe 5 x16' (default: the GPU's)")
    group.add_argument("--inter-node", default=None, metavar="NAME",
                       help="the link between nodes, e.g. 'InfiniBand NDR' (default)")


def cluster_from_args(args: argparse.Namespace):
    """engine.distributed.plan.ClusterChoice, or None for a one-GPU plan (UserError for cluster flags alone)."""
    given = {"--gpus-per-node": args.gpus_per_node, "--interconnect": args.interconnect,
             "--inter-node": args.inter_node}
    if args.strategy == "none" or args.world_size == 1:
        used = [flag for flag, value in given.items() if value is not None]
        if used and args.strategy == "none" and not getattr(args, "counted_gpus", False):
            raise UserError(f"{used[0]} only applies with --world-size N and a --strategy", field="world_size")
    if args.gpus_per_node is not None and args.gpus_per_node < 1:
        raise UserError(f"--gpus-per-node must be 1 or more, got {args.gpus_per_node}", field="gpus_per_node")
    from torchbudget.engine.distributed.plan import ClusterChoice

    return ClusterChoice(args.gpus_per_node, args.interconnect, args.inter_node)


def overheads_from_args(args: argparse.Namespace):
    import os

    from torchbudget.engine.overheads import Overheads

    changes = {}
    if args.cuda_context_mib is not None:
        if not 0 <= args.cuda_context_mib < 1 << 20:
            raise UserError(f"--cuda-context-mib must be between 0 and 1048576, got {args.cuda_context_mib:g}",
                            field="cuda_context")
        changes["cuda_context_bytes"] = int(args.cuda_context_mib * 2**20)
    conf = args.alloc_conf if args.alloc_conf is not None else os.environ.get(ALLOC_CONF_ENV, "")
    return Overheads.with_alloc_conf(conf, **changes)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def parse_kwargs(text: str | None, option: str = "--kwargs") -> dict:
    if not text:
        return {}
    field = option.lstrip("-").replace("-", "_")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{option} is not valid JSON ({exc.msg} at column {exc.colno}): {text}", field=field) \
            from None
    except RecursionError:
        raise UserError(f"{option} nests too deeply", field=field) from None
    if not isinstance(value, dict):
        raise UserError(f"{option} must be a JSON object such as '{{\"num_classes\": 10}}', not {text}",
                        field=field)
    return value


def workload_from_args(args: argparse.Namespace, *, several: bool = False):
    """The workload of the arguments. ``several``: the caller plans several strategies or world sizes itself
    (--strategy a,b, --world-size auto, counted GPUs): the workload is the one-GPU one, checked."""
    from torchbudget.engine.inputs import parse_inputs
    from torchbudget.engine.results import TraceOptions
    from torchbudget.engine.workload import Workload

    if not args.model:
        raise UserError("name a model: a torchvision or Hugging Face name (see analyze --list), path/to/config.json "
                        "or path/to/file.py:Name", field="model")
    # an option that does nothing in the chosen mode is a mistake worth one line, not silence
    if args.checkpointing and not vocab.is_training(args.mode):
        raise UserError("--checkpointing only applies to --mode train", field="checkpointing")
    if args.grad_accum != 1 and not vocab.is_training(args.mode):
        raise UserError("--grad-accum only applies to --mode train", field="grad_accum")
    if args.freeze and not vocab.is_training(args.mode):
        raise UserError("--freeze only applies to --mode train", field="freeze")
    context = context_values(args)[0] if isinstance(args.context_len, str) else args.context_len
    if context and args.mode != "decode":
        raise UserError("--context only applies to --mode decode", field="context_len")
    if args.kv_dtype != "auto" and not vocab.is_generation(args.mode):
        raise UserError("--kv-dtype only applies to --mode prefill or decode", field="kv_dtype")
    if args.lora_rank is not None and args.lora_rank < 1:
        raise UserError(f"--lora-rank must be 1 or more, got {args.lora_rank}", field="lora_rank")
    strategies = strategies_from_args(args)
    if several:
        strategy, world, tp = "none", 1, 1
    else:
        if len(strategies) > 1:
            raise UserError(f"{args.command} plans one strategy; compare takes several (--strategy "
                            f"{','.join(strategies)})", field="strategy")
        if args.world_size == AUTO:
            raise UserError("--world-size auto needs --strategy (one, or auto to try "
                            f"{', '.join(AUTO_STRATEGIES)})", field="world_size")
        strategy, world, tp = strategies[0], args.world_size, args.tp_size
    options = TraceOptions(mode=args.mode, precision=args.precision, optimizer=args.optimizer,
                           checkpointing=args.checkpointing, convention=args.convention,
                           optimizer_impl=args.optimizer_impl, attention=args.attention,
                           target=getattr(args, "target", None) or vocab.DEFAULT_TARGET,
                           context_len=context, kv_dtype=args.kv_dtype, base_dtype=args.base_dtype,
                           lora_rank=args.lora_rank or 0, lora_targets=args.lora_targets or (),
                           freeze=args.freeze or (), grad_accum=args.grad_accum, moe_routing=args.moe_routing,
                           attention_flops=args.attention_flops, strategy=strategy,
                           world_size=world, tp_size=tp,
                           sequence_parallel=args.sequence_parallel)
    inputs = parse_inputs(args.input) if args.input else ()
    workload = Workload(args.model.strip(), inputs, options, parse_kwargs(args.kwargs),
                        parse_kwargs(args.forward_kwargs, "--forward-kwargs"))
    return with_sizes(workload, batch=_size(args, "batch"), seq_len=_size(args, "seq_len"),
                      target_len=_size(args, "target_len"))


def context_values(args: argparse.Namespace) -> tuple[int, ...]:
    """``--context``'s tokens: one value, or sweep's list (1024,2048,4096); () when not given."""
    text = args.context_len
    if not isinstance(text, str):
        return (text,) if text else ()
    try:
        values = tuple(int(part) for part in text.replace(";", ",").split(",") if part.strip())
    except ValueError:
        raise UserError(f"--context must be integers separated by commas, e.g. 1024,2048; got {text!r}",
                        field="context_len") from None
    if not values or any(v < 1 for v in values):
        raise UserError(f"--context values must be positive integers; got {text!r}", field="context_len")
    return values


def _size(args: argparse.Namespace, name: str) -> int | None:
    value = getattr(args, name, None)
    if value is not None and not isinstance(value, int):   # sweep's lists are read by sweep itself
        return None
    if value is not None and value < 1:
        raise UserError(f"--{name.replace('_', '-')} must be 1 or more, got {value}", field=name)
    return value


def with_sizes(workload, *, batch: int | None = None, seq_len: int | None = None, target_len: int | None = None):
    """The workload at ``--batch``/``--seq-len``/``--target-len``: applied to its inputs, or to the model's default
    inputs when none were given (resolving them builds the model on meta)."""
    if batch is None and seq_len is None and target_len is None:
        return workload
    from dataclasses import replace

    if not workload.inputs:
        from torchbudget.engine.api import default_inputs

        defaults = default_inputs(workload.model, workload.model_kwargs, workload.options.mode)
        if not defaults:
            raise UserError(f"{workload.model} has no default input to size; give --input", field="input")
        workload = replace(workload, inputs=tuple(defaults))
    if seq_len is not None:
        if workload.seq_len is None:
            raise UserError(f"--seq-len needs a token input (N x L integer ids); {workload.model} takes "
                            f"{', '.join(s.text() for s in workload.inputs)}", field="input")
        workload = workload.with_seq_len(seq_len)
    if target_len is not None:
        if workload.target_len is None:
            raise UserError(f"--target-len needs an encoder-decoder's target input (decoder_input_ids); "
                            f"{workload.model} takes {', '.join(s.text() for s in workload.inputs)}", field="input")
        workload = workload.with_target_len(target_len)
    return workload.with_batch(batch) if batch is not None else workload


def resolve_gpus(text: str) -> list:
    """'H100 SXM,RTX 4090' or 'local' -> GpuSpecs (UnknownGpuError names the unknown one)."""
    from torchbudget.hardware.catalog import resolve_gpu

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError("name at least one GPU, e.g. --gpu 'H100 SXM' (see the gpus command)", field="gpu")
    return [resolve_gpu(name) for name in names]
