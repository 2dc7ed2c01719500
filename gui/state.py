"""The workload being edited, kept apart from Qt (as napari keeps its layer models apart from their
widgets): one ``WorkloadState`` holds the current ``Workload`` and, for a field whose text does not parse
yet, that raw text and its error, so nothing typed is lost. The workload panel edits the state and
renders from it; the window and its views subscribe to it.

Every change goes through ``set`` / ``update`` / ``edit_text`` / ``pick_model``, which validate first: a
change that fails raises ``UserError`` (``edit_text`` keeps the text as a draft instead) and leaves the
workload as it was. Subscribers get a ``Change`` naming the fields that moved and who moved them."""
from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import Callable, Mapping

from torchbudget.engine.distributed.plan import ClusterChoice
from torchbudget.engine.errors import InputSpecError, UserError
from torchbudget.engine.inputs import InputSpec, parse_inputs
from torchbudget.engine.results import TraceOptions
from torchbudget.engine import vocab
from torchbudget.engine.vocab import InputKind
from torchbudget.engine.workload import Workload

OPTION_FIELDS = tuple(f.name for f in fields(TraceOptions))
TRAINING_ONLY = ("optimizer", "optimizer_impl", "checkpointing", "grad_accum", "freeze")   # TraceOptions clears them for inference
GENERATION_ONLY = ("context_len", "kv_dtype")   # TraceOptions clears them outside prefill/decode (context: decode only)
MODE_DEPENDENT = TRAINING_ONLY + GENERATION_ONLY
DEFAULT_CONTEXT = 1024   # the KV cache's context when decode is first chosen (TraceOptions needs one)
PARALLEL_FIELDS = ("strategy", "world_size", "tp_size", "sequence_parallel")   # several GPUs (engine.distributed)
DEFAULT_WORLD_SIZE = 8   # GPUs when a strategy is first chosen: one HGX/DGX node
DEFAULT_TP = 2           # fsdp+tp's tensor-parallel degree when first chosen
TEXT_FIELDS = ("inputs", "model_kwargs", "lora_targets", "freeze")   # typed as text: may hold a draft
OPTION_TEXT_FIELDS = ("lora_targets", "freeze")                      # comma-separated names or globs
# The largest dimension the app takes: what its spin boxes hold (Qt ints are 32-bit), and beyond what
# PyTorch's CUDA kernels index in one grid dimension. Elements per input: PyTorch indexes with int64.
MAX_DIM = 2**31 - 1

DEFAULT_WORKLOAD = Workload("resnet50", parse_inputs("1x3x224x224"), TraceOptions())


def _short_int(n: int) -> str:
    return f"{n:,}" if n < 10**15 else f"{float(n):.3g}"


def check_inputs(specs: tuple[InputSpec, ...]) -> None:
    """What the window's spin boxes cannot show (Qt ints: 2**31 - 1 per dimension). Whether a tensor can
    exist at all is engine.inputs' rule, applied when the InputSpec was made."""
    for i, spec in enumerate(specs):
        which = f"input {i + 1}" if len(specs) > 1 else "the input"
        for dim in spec.shape:
            if dim > MAX_DIM:
                raise InputSpecError(f"{which} has a dimension of {_short_int(dim)}: too large "
                                     f"(at most {MAX_DIM:,} per dimension)")


def check_workload(workload: Workload) -> None:
    """What ``Workload`` itself does not refuse but the app cannot show or trace."""
    check_inputs(workload.inputs)


def parse_kwargs(text: str) -> dict:
    """Model keyword arguments as typed: a JSON object (empty text: none)."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"model kwargs must be a JSON object such as {{\"num_classes\": 10}}: {exc.msg} "
                        f"at character {exc.pos + 1}", field="model_kwargs") from None
    except RecursionError:
        raise UserError("model kwargs nest too deeply", field="model_kwargs") from None
    if not isinstance(value, dict):
        raise UserError(f"model kwargs must be a JSON object such as {{\"num_classes\": 10}}, not "
                        f"{type(value).__name__}", field="model_kwargs")
    return value


def inputs_text(inputs: tuple[InputSpec, ...]) -> str:
    return ", ".join(s.text() for s in inputs)


def kwargs_text(kwargs: Mapping) -> str:
    return json.dumps(dict(kwargs)) if kwargs else ""


def applies(name: str, mode: str) -> bool:
    """Whether a mode-dependent option means something in ``mode`` (TraceOptions keeps it then)."""
    if name in TRAINING_ONLY:
        return vocab.is_training(mode)
    if name == "context_len":
        return mode == "decode"
    if name in GENERATION_ONLY:
        return vocab.is_generation(mode)
    return True


def _default(name: str, mode: str):
    """What a mode-dependent option is in ``mode`` when nothing was chosen for it yet."""
    return DEFAULT_CONTEXT if name == "context_len" else getattr(TraceOptions(mode="train"), name)


def image_side(workload: Workload) -> int | None:
    """The resolution the app shows: the last dimension of the first image input."""
    images = [s for s in workload.inputs if s.kind is InputKind.IMAGE]
    return images[0].shape[-1] if images else None


@dataclass(frozen=True)
class Change:
    """What a subscriber is told: the workload now, the one before, what moved and who moved it."""

    workload: Workload
    previous: Workload
    fields: frozenset[str]   # "model", "inputs", "model_kwargs", option names, "batch", "resolution", "seq_len",
    #                          "drafts" (a draft or its error changed), "pending" (default inputs awaited),
    #                          "cluster" (GPUs per node or an interconnect: the cluster, not the workload)
    source: str              # who changed it: a widget's name, "file", "settings", "gpu", "defaults", ...


def _diff(old: Workload, new: Workload) -> set[str]:
    out = set()
    if old.model != new.model:
        out.add("model")
    if old.inputs != new.inputs:
        out.add("inputs")
        if old.batch_size != new.batch_size:
            out.add("batch")
        if image_side(old) != image_side(new):
            out.add("resolution")
        if old.seq_len != new.seq_len:
            out.add("seq_len")
    if dict(old.model_kwargs) != dict(new.model_kwargs):
        out.add("model_kwargs")
    out.update(name for name in OPTION_FIELDS if getattr(old.options, name) != getattr(new.options, name))
    return out


class WorkloadState:
    """The current workload, the drafts of fields being typed, and who listens.

    Public API: ``workload``, ``drafts``, ``errors``, ``ready``, ``revision``, ``edited_at(field)``,
    ``pending_inputs_for``, ``choice(name)``; ``set``, ``update``, ``edit_text``, ``pick_model``,
    ``apply_default_inputs``, ``cancel_default_inputs``; ``subscribe`` (returns an unsubscribe function)."""

    def __init__(self, workload: Workload = DEFAULT_WORKLOAD):
        check_workload(workload)
        self._workload = workload
        self._drafts: dict[str, str] = {}
        self._errors: dict[str, UserError] = {}
        self._edited: dict[str, int] = {}
        self._revision = 0
        self._listeners: list[Callable[[Change], None]] = []
        # training-only options chosen while in training mode: inference clears them (TraceOptions), but
        # switching back to training brings them back
        # options that only some modes have (training's optimizer, decode's context...), chosen while they
        # applied: another mode clears them (TraceOptions), choosing a mode they apply to again brings them back
        self._memo = self._mode_options(workload.options)
        self.pending_inputs_for: str | None = None   # a model picked whose default inputs are on their way
        self._cluster = ClusterChoice()
        # the several-GPU choices made while a strategy was chosen: one GPU clears them, a strategy brings them back
        self._parallel = self._parallel_memo(workload.options)

    # -- reading --------------------------------------------------------------------------------
    @property
    def workload(self) -> Workload:
        """The last valid workload (what the fields say, but for drafts)."""
        return self._workload

    @property
    def drafts(self) -> Mapping[str, str]:
        """Raw text of fields that do not parse yet, by field ("inputs", "model_kwargs")."""
        return MappingProxyType(dict(self._drafts))

    @property
    def errors(self) -> Mapping[str, UserError]:
        """Why each draft does not parse (the error names the widget's field: "input", "model_kwargs")."""
        return MappingProxyType(dict(self._errors))

    @property
    def ready(self) -> bool:
        """The fields describe ``workload`` exactly: no draft, no default input still on its way."""
        return not self._drafts and self.pending_inputs_for is None

    @property
    def revision(self) -> int:
        return self._revision

    def edited_at(self, field: str) -> int:
        """The revision of the last change the user made to ``field`` (0: never)."""
        return self._edited.get(field, 0)

    def choice(self, name: str):
        """What an option is now, or, for one the mode clears (training's optimizer, decode's context), what
        it will be again once a mode it applies to is chosen."""
        options = self._workload.options
        if name not in MODE_DEPENDENT or applies(name, options.mode):
            return getattr(options, name)
        return self._memo.get(name, _default(name, options.mode))

    training_choice = choice

    @property
    def cluster(self) -> ClusterChoice:
        """GPUs per node and the interconnects of a distributed workload (None: hardware.cluster's defaults).
        Not part of the workload (no trace depends on it): the plan's communication does."""
        return self._cluster

    # -- listening ------------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        self._listeners.append(callback)

        def unsubscribe():
            if callback in self._listeners:
                self._listeners.remove(callback)
        return unsubscribe

    def _notify(self, previous: Workload, changed: set[str], source: str) -> None:
        if not changed:
            return
        self._revision += 1
        for name in changed:
            self._edited[name] = self._revision
        change = Change(self._workload, previous, frozenset(changed), source)
        for callback in list(self._listeners):
            callback(change)

    # -- changing -------------------------------------------------------------------------------
    def set(self, workload: Workload, *, source: str = "set") -> None:
        """Replace everything (a file, the settings); drafts and a pending default input are dropped."""
        check_workload(workload)
        previous = self._workload
        changed = _diff(previous, workload)
        if self._drafts or self._errors:
            changed.add("drafts")
        if self.pending_inputs_for is not None:
            changed.add("pending")
        self._drafts.clear()
        self._errors.clear()
        self.pending_inputs_for = None
        self._workload = workload
        self._memo = self._mode_options(workload.options)
        self._parallel = self._parallel_memo(workload.options)
        self._notify(previous, changed, source)

    def update(self, *, source: str = "edit", **changes) -> None:
        """Change some fields: ``model``, ``inputs`` (InputSpecs or text), ``model_kwargs``, ``batch``,
        ``resolution`` (square side of the image inputs), ``seq_len`` (positions of the token inputs) or any
        TraceOptions field. Raises UserError and
        changes nothing when a value is refused."""
        previous = self._workload
        workload = self._apply(previous, changes)
        changed = _diff(previous, workload)
        self._workload = workload
        cleared = [f for f in TEXT_FIELDS if f in changes and f in self._drafts]
        for name in cleared:
            del self._drafts[name]
            self._errors.pop(name, None)
        if cleared:
            changed.add("drafts")
        if self.pending_inputs_for is not None and "inputs" in changes and source != "defaults":
            self.pending_inputs_for = None   # the user's own input wins over the model's default
            changed.add("pending")
        self._notify(previous, changed or self._touched(changes), source)

    def _touched(self, changes) -> set[str]:
        # an option chosen while its mode is not (an optimizer in inference) changes no workload, but it is an edit
        mode = self._workload.options.mode
        return {k for k in changes if k in MODE_DEPENDENT and not applies(k, mode)}

    def edit_text(self, field: str, text: str, *, source: str | None = None) -> UserError | None:
        """The user typed ``text`` into ``field`` ("inputs", "model_kwargs", "lora_targets", "freeze"):
        applied when it parses, else kept as a draft with its error (returned). The workload is never lost
        either way."""
        if field not in TEXT_FIELDS:
            raise ValueError(f"{field!r} is not a text field; use update()")
        try:
            if field in OPTION_TEXT_FIELDS:
                value = text
                self._apply(self._workload, {field: text})   # e.g. LoRA targets without a rank: refused
            else:
                value = parse_inputs(text) if field == "inputs" else parse_kwargs(text)
            if field == "inputs":
                check_inputs(value)
        except UserError as exc:
            previous = self._workload
            self._drafts[field] = text
            self._errors[field] = exc
            changed = {"drafts"}
            if field == "inputs" and self.pending_inputs_for is not None:
                self.pending_inputs_for = None   # typing wins, even half-typed
                changed.add("pending")
            self._edited[field] = self._revision + 1
            self._notify(previous, changed, source or field)
            return exc
        self.update(source=source or field, **{field: value})
        return None

    def pick_model(self, model: str, *, source: str = "model") -> None:
        """A registry model chosen: analysed once its own default input has arrived
        (``apply_default_inputs``), unless the user types an input first."""
        previous = self._workload
        self._workload = self._apply(previous, {"model": model})
        self.pending_inputs_for = model
        self._notify(previous, _diff(previous, self._workload) | {"pending"}, source)

    def apply_default_inputs(self, model: str, specs: tuple[InputSpec, ...]) -> bool:
        """The default input of ``model`` has arrived: used (at the batch now chosen) only when that model
        is still the one waiting for it; never over what the user typed meanwhile."""
        if self.pending_inputs_for != model or self._workload.model != model or not specs:
            return False
        previous = self._workload
        batch = previous.batch_size
        self._workload = self._apply(previous, {"inputs": tuple(s.with_batch(batch) for s in specs)})
        self.pending_inputs_for = None
        self._notify(previous, _diff(previous, self._workload) | {"pending"}, "defaults")
        return True

    def cancel_default_inputs(self) -> None:
        """The default input could not be found: analyse with the inputs there are."""
        if self.pending_inputs_for is not None:
            self.pending_inputs_for = None
            self._notify(self._workload, {"pending"}, "defaults")

    def set_cluster(self, choice: ClusterChoice | None = None, *, source: str = "cluster", **changes) -> None:
        """Replace the cluster choice, or change some of it (``gpus_per_node``, ``intra``, ``inter``): names
        checked against hardware.interconnect (any spelling, kept canonical); raises UserError, changing
        nothing, when refused. Whether the world size fits the nodes is the plan's check (hardware.cluster)."""
        from torchbudget.hardware.interconnect import find_interconnect

        unknown = set(changes) - {"gpus_per_node", "intra", "inter"}
        if unknown:
            raise TypeError(f"unknown cluster field(s): {', '.join(sorted(unknown))}")
        choice = replace(choice or self._cluster, **changes)
        per_node = choice.gpus_per_node
        if per_node is not None:
            per_node = vocab.check_count(per_node, "GPUs per node", "gpus_per_node", lowest=1)
            if per_node > vocab.MAX_WORLD_SIZE:
                raise UserError(f"GPUs per node must be at most {vocab.MAX_WORLD_SIZE}, got {per_node}",
                                field="gpus_per_node")
        names = {k: find_interconnect(getattr(choice, k), strict=False).name if getattr(choice, k) else None
                 for k in ("intra", "inter")}
        choice = ClusterChoice(gpus_per_node=per_node, **names)
        if choice == self._cluster:
            return
        self._cluster = choice
        self._notify(self._workload, {"cluster"}, source)

    # -- rules ----------------------------------------------------------------------------------
    @staticmethod
    def _parallel_memo(options: TraceOptions) -> dict:
        """What to bring back: the GPU count of any strategy, the TP degree of fsdp+tp (tp's is the world)."""
        if not options.distributed:
            return {}
        memo = {"world_size": options.world_size}
        if options.strategy == "fsdp+tp":
            memo["tp_size"] = options.tp_size
        return memo

    def _parallel_changes(self, current: TraceOptions, changes: dict) -> dict:
        """What a user expects of the several-GPU fields when only some are chosen: picking a strategy brings
        back the GPU count chosen before (else a node of 8), one GPU clears them, and the tensor-parallel degree
        and sequence parallel follow the strategy (tp: the whole world; fsdp+tp: 2 or the degree chosen before)."""
        if not set(PARALLEL_FIELDS) & set(changes):
            return changes
        out = dict(changes)
        memo = {**self._parallel, **self._parallel_memo(current)}
        chosen = vocab.strategy(out.get("strategy", current.strategy))
        if chosen.name == "none":
            if "strategy" in changes:
                out.setdefault("world_size", 1)
                out.setdefault("tp_size", 1)
                out.setdefault("sequence_parallel", False)
            return out
        if "strategy" in changes and current.strategy == "none" and "world_size" not in changes:
            out["world_size"] = memo.get("world_size", DEFAULT_WORLD_SIZE)
        if "tp_size" not in changes:
            if chosen.name == "tp":
                out["tp_size"] = 1   # TraceOptions makes it the world size
            elif chosen.name == "fsdp+tp":
                world = out.get("world_size", current.world_size)
                tp = current.tp_size if current.strategy == "fsdp+tp" else memo.get("tp_size", DEFAULT_TP)
                out["tp_size"] = tp if 2 <= tp <= world and world % tp == 0 else DEFAULT_TP
            elif "strategy" in changes:
                out["tp_size"] = 1
        if not chosen.tensor_parallel and "sequence_parallel" not in changes:
            out["sequence_parallel"] = False
        return out

    @staticmethod
    def _mode_options(options: TraceOptions) -> dict:
        return {name: getattr(options, name) for name in MODE_DEPENDENT if applies(name, options.mode)}

    def _apply(self, workload: Workload, changes: dict) -> Workload:
        unknown = set(changes) - {"model", "inputs", "model_kwargs", "forward_kwargs", "batch", "resolution",
                                  "seq_len", *OPTION_FIELDS}
        if unknown:
            raise TypeError(f"unknown workload field(s): {', '.join(sorted(unknown))}")
        if {"batch", "resolution", "seq_len"} & set(changes) and "inputs" in self._drafts:
            raise InputSpecError("fix the input shape first: batch, resolution and sequence length are part of it")
        if "model" in changes:
            model = str(changes["model"]).strip()
            if not model:
                raise UserError("choose a model: type a torchvision name or open a .py file", field="model")
            workload = replace(workload, model=model)
        if "inputs" in changes:
            inputs = changes["inputs"]
            inputs = parse_inputs(inputs) if isinstance(inputs, str) else tuple(inputs)
            check_inputs(inputs)
            workload = replace(workload, inputs=inputs)
        for name in ("model_kwargs", "forward_kwargs"):   # typed as JSON text, or given as a mapping
            if name in changes:
                kwargs = changes[name]
                kwargs = parse_kwargs(kwargs) if isinstance(kwargs, str) else kwargs
                if not isinstance(kwargs, Mapping):
                    raise UserError(f"{name.replace('_', ' ')} must be a mapping of names to values", field=name)
                workload = replace(workload, **{name: dict(kwargs)})
        if "batch" in changes:
            batch = int(changes["batch"])
            if not 1 <= batch <= MAX_DIM:
                raise InputSpecError(f"batch size must be from 1 to {MAX_DIM:,}, not {_short_int(batch)}")
            workload = workload.with_batch(batch)
        if "resolution" in changes:
            side = int(changes["resolution"])
            if image_side(workload) is None:
                raise InputSpecError("the inputs have no image to resize")
            if not 1 <= side <= MAX_DIM:
                raise InputSpecError(f"resolution must be from 1 to {MAX_DIM:,} px, not {_short_int(side)}")
            workload = workload.with_resolution(side, side)
            check_inputs(workload.inputs)
        if "seq_len" in changes:
            length = int(changes["seq_len"])
            if workload.seq_len is None:
                raise InputSpecError("the inputs have no token sequence to lengthen")
            if not 1 <= length <= MAX_DIM:
                raise InputSpecError(f"sequence length must be from 1 to {MAX_DIM:,} tokens, not {_short_int(length)}")
            workload = workload.with_seq_len(length)
            check_inputs(workload.inputs)
        options = {k: v for k, v in changes.items() if k in OPTION_FIELDS}
        if options:
            options = self._parallel_changes(workload.options, options)
            workload = replace(workload, options=self._options(workload.options, options))
        return workload

    def _options(self, current: TraceOptions, changes: dict) -> TraceOptions:
        values = {**{name: getattr(current, name) for name in OPTION_FIELDS}, **changes}
        chosen = {k: v for k, v in changes.items() if k in MODE_DEPENDENT}
        mode = vocab.normalise_mode(values["mode"])
        memo = dict(self._memo)
        memo.update(self._mode_options(current))   # kept for when their mode is chosen again
        for name in MODE_DEPENDENT:
            if name not in chosen and applies(name, mode) and not applies(name, current.mode):
                values[name] = memo.get(name, _default(name, mode))   # back: what was chosen before
        new = TraceOptions(**values)   # normalises; raises UserError for a bogus value
        later = {k: v for k, v in chosen.items() if not applies(k, mode)}
        if later:   # chosen for another mode: normalised, and checked now
            where = {"train": [k for k in later if k in TRAINING_ONLY], "decode": [k for k in later if k in GENERATION_ONLY]}
            for check_mode, names in where.items():
                if names:
                    check = TraceOptions(**{**values, **{n: memo.get(n, _default(n, check_mode)) for n in MODE_DEPENDENT
                                                         if applies(n, check_mode) and n not in later},
                                            "mode": check_mode, **{n: later[n] for n in names}})
                    memo.update({n: getattr(check, n) for n in names})
        memo.update(self._mode_options(new))
        self._memo = memo
        self._parallel.update(self._parallel_memo(new))
        return new
