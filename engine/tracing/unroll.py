"""Identical repeated blocks traced once, reproduced exactly: a decoder of 80 layers is traced with 3 of them.

A model whose repeated blocks (engine.tracing.blocks) are one list of identical layers runs the same aten ops,
allocating and freeing the same storages, in every middle layer: only module paths and storage identities
differ. So the step is traced on a *shallow view* (the list cut to its first 3 blocks: first, middle, last) and
the middle block's op records and storage lifetimes are replicated for the blocks not run, in forward and in
backward. Every parameter (and its optimizer state) is the model's own: the stand-ins of all blocks are tracked
as in a full trace, the blocks not run get their gradients before the optimizer step (which then runs over every
parameter for real), and those gradients take the replicated middle gradients' place in the timeline.

The rule is checked on the model itself, not assumed: a second shallow trace of 4 blocks must equal the
3-block trace replicated to 4 (every op, every storage event, module statistics); any difference, any block
that differs (type, parameter shapes, plain attributes other than its index), any error in a shallow trace
falls back to the full trace. A storage's lifetime is placed relative to the block that allocated it (freed in
the next block's forward, in its own backward...), and within a slot by its rank among that slot's events."""
from __future__ import annotations

import copy
import re
from bisect import bisect_right
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field, replace

import torch

from torchbudget.engine.results import OpRecord, Phase
from torchbudget.engine.tracing import blocks as block_rules
from torchbudget.engine.tracing.assemble import StorageRoles
from torchbudget.engine.tracing.modules import ModuleCallStats
from torchbudget.engine.tracing.storage import StorageLife

MIN_BLOCKS = 12     # fewer blocks: a full trace is cheap enough
SHALLOW = 3         # blocks traced: the first, one middle (the template), the last
CHECK = SHALLOW + 1


class NotPeriodic(Exception):
    """The shallow trace does not have the structure the replication needs: trace in full."""


@dataclass(frozen=True)
class Plan:
    container: str      # path of the ModuleList/Sequential holding the blocks
    count: int          # how many blocks the model has
    shallow: int = SHALLOW   # blocks the shallow step runs (checked against one more)

    @property
    def check(self) -> int:
        return self.shallow + 1

    def note(self) -> str:
        return (f"repeated blocks: {self.count} identical {self.container} blocks, traced as {self.shallow} (checked "
                f"against {self.check}) and the second one replicated op for op (docs/trace.md)")


def _plain(value) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, tuple) and all(_plain(v) for v in value)


def signature(block: torch.nn.Module) -> tuple:
    """What makes two blocks run the same ops: module types, parameter/buffer shapes and dtypes, and every
    plain attribute except the block's own index (``layer_idx``...)."""
    parts: list = []
    for path, module in block.named_modules():
        attrs = tuple(sorted((k, v) for k, v in vars(module).items()
                             if not k.startswith("_") and "idx" not in k and "index" not in k and _plain(v)))
        parts.append((path, type(module), attrs))
    parts += [(n, tuple(p.shape), p.dtype, p.requires_grad) for n, p in block.named_parameters()]
    parts += [(n, tuple(b.shape), b.dtype) for n, b in block.named_buffers()]
    return tuple(parts)


def plan(model: torch.nn.Module, *, generation: bool, min_blocks: int | None = None) -> Plan | None:
    """The replication plan of ``model``, or None when it is traced in full (``min_blocks``: MIN_BLOCKS)."""
    min_blocks = MIN_BLOCKS if min_blocks is None else min_blocks
    if generation:    # a KV cache is sized by the model's config, not by the blocks that run
        return None
    found = block_rules.find_blocks(model)
    if len(found) < max(min_blocks, CHECK + 2):
        return None
    parents = {path.rpartition(".")[0] for path, _ in found}
    if len(parents) != 1:
        return None
    container = parents.pop()
    holder = model.get_submodule(container)
    if list(holder._modules) != [str(i) for i in range(len(found))]:
        return None
    blocks = [b for _, b in found]
    first = signature(blocks[0])
    if any(signature(b) != first for b in blocks[1:]):
        return None
    ids = [id(p) for b in blocks for p in b.parameters()]
    if len(ids) != len(set(ids)):    # blocks sharing parameters
        return None
    return Plan(container, len(found))


def shallow_view(model: torch.nn.Module, unroll: Plan, depth: int) -> torch.nn.Module:
    """A shallow copy of ``model`` whose block list holds its first ``depth`` blocks (the modules themselves);
    every module on the way is a copy with its own ``_modules`` dict, the user's model is not touched."""
    keys = unroll.container.split(".")

    def view(module: torch.nn.Module, level: int) -> torch.nn.Module:
        clone = copy.copy(module)
        if level == len(keys):
            modules = OrderedDict(list(module._modules.items())[:depth])
        else:
            modules = OrderedDict(module._modules)
            modules[keys[level]] = view(module._modules[keys[level]], level + 1)
        object.__setattr__(clone, "_modules", modules)
        return clone

    return view(model, 0)


@dataclass
class Shallow:
    """What one shallow step leaves for the replication."""

    ops: list[OpRecord]
    lives: list[StorageLife]
    roles: StorageRoles
    stats: dict[str, ModuleCallStats]
    grads: dict[int, tuple[str, ...]] = field(default_factory=dict)    # storage -> parameters: backward's gradients
    pending: dict[int, tuple[str, ...]] = field(default_factory=dict)  # ... gradients made for the blocks not run
    start_order: list[int] | None = None    # the storages allocated before the first op, in the order to keep


@dataclass
class Unrolled:
    ops: list[OpRecord]
    lives: list[StorageLife]
    roles: StorageRoles
    stats: dict[str, ModuleCallStats]
    sources: list[int]      # the shallow op each op is (a copy of)


class _Paths:
    def __init__(self, container: str):
        self.prefix = container + "."
        self._split = re.compile(re.escape(self.prefix) + r"(\d+)(.*)\Z", re.S)
        self._cache: dict[str, tuple[int, str] | None] = {}

    def layer(self, path: str) -> tuple[int, str] | None:
        """(block index, rest of the path) of a path inside a block."""
        if path in self._cache:
            return self._cache[path]
        m = self._split.match(path)
        found = (int(m.group(1)), m.group(2)) if m and (not m.group(2) or m.group(2).startswith(".")) else None
        self._cache[path] = found
        return found

    def renamed(self, path: str, mapping: dict[int, int]) -> str:
        found = self.layer(path)
        if found is None or found[0] not in mapping:
            return path
        return f"{self.prefix}{mapping[found[0]]}{found[1]}"


def _placed(op: OpRecord, index: int, path: str) -> OpRecord:
    """``op`` at another index and module path: ``dataclasses.replace`` without re-running ``__init__`` (half the
    replication's time on a 70B step)."""
    placed = object.__new__(OpRecord)
    placed.__dict__.update(op.__dict__, index=index, module_path=path)
    return placed


def block_of(unroll_plan: Plan):
    """``layer(path) -> (block index, rest) | None`` for paths of ``unroll_plan``'s blocks."""
    return _Paths(unroll_plan.container).layer


def _windows(ops: list[OpRecord], paths: _Paths, training: bool,
             blocks: int = SHALLOW) -> dict[tuple[Phase, int], tuple[int, int]]:
    """(phase, shallow block) -> [start, end) of op indices: from the block's first op to the next block's
    first op (forward: block + 1, backward: block - 1); the last block to run ends with its own last op."""
    where: dict[tuple[Phase, int], list[int]] = defaultdict(list)
    for op in ops:
        found = paths.layer(op.module_path)
        if found is None:
            continue
        if op.phase is Phase.OPTIMIZER or found[0] >= blocks:
            raise NotPeriodic(f"op {op.index} of {op.module_path} in phase {op.phase.value}")
        where[op.phase, found[0]].append(op.index)
    windows = {}
    phases = [(Phase.FORWARD, list(range(blocks)))]
    if training:
        phases.append((Phase.BACKWARD, list(reversed(range(blocks)))))
    for phase, order in phases:
        if any(not where.get((phase, b)) for b in order):
            raise NotPeriodic(f"not every block ran in {phase.value}")
        for here, after in zip(order, order[1:] + [None]):
            start, last = where[phase, here][0], where[phase, here][-1]
            end = where[phase, after][0] if after is not None else last + 1
            if not start <= last < end:
                raise NotPeriodic(f"block {here}'s {phase.value} ops are not contiguous")
            if any(ops[i].phase is not phase for i in range(start, end)):
                raise NotPeriodic(f"block {here}'s {phase.value} window mixes phases")
            windows[phase, here] = (start, end)
    if (Phase.FORWARD, 0) in windows and training and windows[Phase.FORWARD, blocks - 1][1] > \
            windows[Phase.BACKWARD, blocks - 1][0]:
        raise NotPeriodic("forward and backward windows overlap")
    return windows


def _absolute(windows, n: int, training: bool, blocks: int) -> list[tuple[int, int]]:
    """The op ranges outside the blocks' windows: before the first block, between forward and backward, after."""
    first, last = windows[Phase.FORWARD, 0], windows[Phase.FORWARD, blocks - 1]
    if not training:
        return [(0, first[0]), (last[1], n)]
    return [(0, first[0]), (last[1], windows[Phase.BACKWARD, blocks - 1][0]), (windows[Phase.BACKWARD, 0][1], n)]


def insertions(shallow: Shallow, deeper: Shallow, unroll_plan: Plan, *, training: bool) -> dict:
    """Work outside the blocks that grows with them, from the SHALLOW- and CHECK-block steps: per range outside the
    blocks, the ops the deeper step runs there in addition (FSDP's first forward initialises every unit's views
    from the root) — {range start: (offset, ops)}. Such ops may not allocate or free anything."""
    paths = _Paths(unroll_plan.container)
    k = unroll_plan.shallow
    mine = _absolute(_windows(shallow.ops, paths, training, k), len(shallow.ops), training, k)
    theirs = _absolute(_windows(deeper.ops, paths, training, k + 1), len(deeper.ops), training, k + 1)
    busy = {life.alloc_index for life in deeper.lives} | {life.free_index for life in deeper.lives
                                                           if life.free_seq is not None}
    found = {}
    for (a0, a1), (b0, b1) in zip(mine, theirs):
        a = [replace(op, index=0) for op in shallow.ops[a0:a1] if op.phase is not Phase.OPTIMIZER]
        b = [replace(op, index=0) for op in deeper.ops[b0:b1] if op.phase is not Phase.OPTIMIZER]
        if a == b:
            continue
        d = len(b) - len(a)
        p = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        if d <= 0 or b[p + d:] != a[p:] or any(b0 + i in busy for i in range(p, p + d)) or any(
                op.kind.name == "COLLECTIVE" for op in b[p:p + d]):
            raise NotPeriodic("the work outside the blocks changes with them")
        found[a0] = (p, deeper.ops[b0 + p:b0 + p + d])
    return found


def unroll(shallow: Shallow, unroll_plan: Plan, count: int, *, training: bool, check: bool = False,
           inserted: dict | None = None) -> Unrolled:
    """``shallow`` (a SHALLOW-block step) replicated to ``count`` blocks. ``check``: for the comparison with a
    deeper shallow step, which has no optimizer step: optimizer ops and events, and the gradients made for the
    blocks that did not run, are left out."""
    paths = _Paths(unroll_plan.container)
    ops = shallow.ops
    k = unroll_plan.shallow
    windows = _windows(ops, paths, training, k)
    template = 1                 # the block replicated; the blocks after it keep their distance to the end
    extra = count - k            # blocks not run
    new_block = {0: 0, template: template, **{b: b + extra for b in range(template + 1, k)}}
    after = {b: new_block[b] for b in range(template + 1, k)}
    copies = range(template + 1, template + extra + 1)

    # the new timeline: segments of old op slots, each (phase or None, new block or None, start, end, old->new)
    segments: list[tuple[Phase | None, int | None, int, int, dict[int, int]]] = []
    cursor = 0

    def absolute(end: int):
        nonlocal cursor
        if end > cursor:
            grows = (inserted or {}).get(cursor)
            if grows is not None:   # work outside the blocks that grows with them: once per block not run
                offset, extra_ops = grows
                segments.append((None, None, cursor, cursor + offset, after))
                segments.append(("insert", extra, 0, 0, extra_ops))
                segments.append((None, None, cursor + offset, end, after))
            else:
                segments.append((None, None, cursor, end, after))
        cursor = max(cursor, end)

    def window(phase: Phase, block: int, as_block: int):
        nonlocal cursor
        start, end = windows[phase, block]
        absolute(start)
        segments.append((phase, as_block, start, end, {block: as_block}))
        cursor = max(cursor, end)

    window(Phase.FORWARD, 0, 0)
    window(Phase.FORWARD, template, template)
    for j in copies:
        segments.append((Phase.FORWARD, j, *windows[Phase.FORWARD, template], {template: j}))
    for b in range(template + 1, k):
        window(Phase.FORWARD, b, new_block[b])
    if training:
        for b in reversed(range(template + 1, k)):
            window(Phase.BACKWARD, b, new_block[b])
        for j in reversed(copies):
            segments.append((Phase.BACKWARD, j, *windows[Phase.BACKWARD, template], {template: j}))
        window(Phase.BACKWARD, template, template)
        window(Phase.BACKWARD, 0, 0)
    absolute(len(ops))

    # new op list, new slot of each (phase, new block) window, and of every old slot outside the copies
    new_ops: list[OpRecord] = []
    sources: list[int] = []
    start_of: dict[tuple[Phase, int], tuple[int, int]] = {}
    old_to_new: dict[int, int] = {}
    for phase, block, start, end, mapping in segments:
        if phase == "insert":
            for _ in range(block):
                for op in mapping:
                    new_ops.append(_placed(op, len(new_ops), op.module_path))
                    sources.append(-1)
            continue
        if check and phase is None and start < len(ops) and any(
                ops[i].phase is Phase.OPTIMIZER for i in range(start, end)):
            end = next(i for i in range(start, end) if ops[i].phase is Phase.OPTIMIZER)
        base = len(new_ops)
        if phase is not None:
            start_of[phase, block] = (base, end - start)
        copied = phase is not None and block in copies
        for i in range(start, end):
            op = ops[i]
            path = paths.renamed(op.module_path, mapping)
            new_ops.append(_placed(op, len(new_ops), path) if (path != op.module_path
                                                                 or op.index != len(new_ops)) else op)
            sources.append(i)
            if not copied:
                old_to_new[i] = base + (i - start)
    segments = [segment for segment in segments if segment[0] != "insert"]
    old_windows = sorted((start, end, phase, block) for (phase, block), (start, end) in windows.items())
    starts = [w[0] for w in old_windows]

    def locate(slot: int):
        """(phase, shallow block, offset) of an old slot inside a block window, else None."""
        at = bisect_right(starts, slot) - 1
        if at >= 0:
            start, end, phase, block = old_windows[at]
            if slot < end:
                return phase, block, slot - start
        return None

    def new_slot(phase: Phase, block: int, offset: int) -> int:
        if not 0 <= block < count or (phase, block) not in start_of:
            raise NotPeriodic(f"a lifetime reaches block {block} in {phase.value}")
        base, length = start_of[phase, block]
        if offset >= length:
            raise NotPeriodic("a lifetime ends past a replicated window")
        return base + offset

    # ranks: each event's position among the events of its old slot
    rank: dict[tuple[int, str], int] = {}
    by_slot: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
    for life in shallow.lives:
        by_slot[life.alloc_index].append((life.alloc_seq, life.storage_id, "alloc"))
        if life.free_seq is not None:
            by_slot[life.free_index].append((life.free_seq, life.storage_id, "free"))
    for events in by_slot.values():
        events.sort()
        for r, (_, sid, kind) in enumerate(events):
            rank[sid, kind] = r
    if shallow.start_order is not None:
        for r, sid in enumerate(shallow.start_order):
            rank[sid, "alloc"] = r

    def moved(slot: int | None, home_old: int | None, home_new: int | None):
        """New slot of an old event slot: inside a window, relative to the lifetime's home block."""
        if slot is None:
            return None
        if slot == -1:
            return -1
        spot = locate(slot)
        if spot is None:
            if slot not in old_to_new:
                return "dropped"
            return old_to_new[slot]
        phase, block, offset = spot
        target = new_block[block] if home_old is None else home_new + (block - home_old)
        return new_slot(phase, target, offset)

    dropped_grads = set(shallow.pending)
    for sid in shallow.pending:
        if shallow.lives[sid].free_seq is not None:
            raise NotPeriodic("a gradient of a block that did not run is freed")
    # events: (new slot, rank, order) -> (life source, instance block)
    instances: list[tuple[StorageLife, int | None]] = []
    keys: list[tuple] = []
    replicated: set[int] = set()
    # the template's twin in the next block (k >= 4): a template lifetime that ends in block 0's window (the first
    # block, whose backward differs) ends, for the copies, where the twin's ends in the template's window
    twins: dict[tuple, StorageLife] = {}
    if k >= 4:
        for life in shallow.lives:
            spot = locate(life.alloc_index) if life.alloc_index >= 0 else None
            if spot is not None and spot[1] == template + 1:
                twins[spot[0], spot[2], rank[life.storage_id, "alloc"]] = life
    for life in shallow.lives:
        if life.storage_id in dropped_grads:
            continue
        spot = locate(life.alloc_index) if life.alloc_index >= 0 else None
        homes = [None]
        if spot is not None:
            homes = [template, *copies] if spot[1] == template else [new_block[spot[1]]]
            if spot[1] == template:
                replicated.add(life.storage_id)
        for home in homes:
            a = moved(life.alloc_index, None if spot is None else spot[1], home)
            if a == "dropped":
                break
            ends, home_old = life, None if spot is None else spot[1]
            if k >= 4 and spot is not None and spot[1] == template and home != template:
                own = locate(life.free_index) if life.free_seq is not None else None
                if own is None or own[1] == 0:   # ends in the first block's realm: a middle block's ends there
                    twin = twins.get((spot[0], spot[2], rank[life.storage_id, "alloc"]))
                    there = locate(twin.free_index) if twin is not None and twin.free_seq is not None else None
                    if twin is not None and twin.nbytes == life.nbytes and there is not None \
                            and 0 < there[1] < k - 1:
                        ends, home_old = twin, template + 1
                    elif own is not None:
                        raise NotPeriodic("a lifetime ending in the first block has no twin")
            f = moved(ends.free_index, home_old, home) if ends.free_seq is not None else None
            if f == "dropped":
                f = None
            instances.append((life, home))
            keys.append(((a, rank[life.storage_id, "alloc"], home or 0),
                         None if f is None else (f, rank[ends.storage_id, "free"], home or 0)))
    if not check:
        _check_gradients(shallow, paths, template, k, count, replicated)

    order = sorted(range(len(instances)), key=lambda i: keys[i][0])
    new_id = {old: new for new, old in enumerate(order)}
    events = sorted([(keys[i][0], 0, i) for i in range(len(instances))]
                    + [(keys[i][1], 1, i) for i in range(len(instances)) if keys[i][1] is not None])
    seq = {}
    for n, (_, kind, i) in enumerate(events):
        seq[kind, i] = n
    lives = []
    for i in order:
        life, _ = instances[i]
        (a, _, _), freed = keys[i]
        lives.append(StorageLife(new_id[i], life.nbytes, a, life.alloc_phase, seq[0, i],
                                 None if freed is None else freed[0], life.free_phase if freed else None,
                                 None if freed is None else seq[1, i]))
    roles = StorageRoles(forward_end_seq=_forward_end(shallow, keys, instances, events))
    role_sets = [(shallow.roles.weights, roles.weights), (shallow.roles.buffers, roles.buffers),
                 (shallow.roles.inputs, roles.inputs), (shallow.roles.kv_cache, roles.kv_cache),
                 (shallow.roles.gradients, roles.gradients), (shallow.roles.optimizer_state, roles.optimizer_state)]
    for i, (life, _) in enumerate(instances):
        for old, new in role_sets:
            if life.storage_id in old:
                new.add(new_id[i])
    return Unrolled(new_ops, lives, roles, _stats(shallow.stats, paths, template, new_block, copies), sources)


def _forward_end(shallow: Shallow, keys, instances, events) -> int | None:
    end = shallow.roles.forward_end_seq
    if end is None:
        return None
    n = 0
    for key, kind, i in events:
        life = instances[i][0]
        old_seq = life.alloc_seq if kind == 0 else life.free_seq
        if old_seq >= end:
            break
        n += 1
    return n


def _check_gradients(shallow: Shallow, paths: _Paths, template: int, k: int, count: int, replicated: set[int]) -> None:
    """The gradients made for the blocks that did not run are exactly the replicated template gradients' (those
    the template block's backward allocated; accumulated gradients exist from the start for every block)."""
    made = defaultdict(int)

    def key(names, sid):
        found = [paths.layer(name) for name in names]
        blocks = {f[0] if f else None for f in found}
        return blocks, (tuple(sorted(f[1] for f in found if f)), shallow.lives[sid].nbytes)

    for sid, names in shallow.grads.items():   # the template window's (FSDP: maybe the next block's reduction)
        blocks, key_ = key(names, sid)
        if sid in replicated and len(blocks) == 1 and None not in blocks:
            made[key_] += count - k
    for sid, names in shallow.pending.items():
        blocks, key_ = key(names, sid)
        if len(blocks) != 1 or None in blocks or not k <= min(blocks) < count:
            raise NotPeriodic(f"a gradient made for {names[0]}")
        made[key_] -= 1
    if any(made.values()):
        raise NotPeriodic("the blocks that did not run have other gradients than the replicated block")


def _stats(stats: dict[str, ModuleCallStats], paths: _Paths, template: int, new_block: dict,
           copies) -> dict[str, ModuleCallStats]:
    out: dict[str, ModuleCallStats] = {}
    for path, value in stats.items():
        found = paths.layer(path)
        if found is None:
            out[path] = value
            continue
        out[paths.renamed(path, {found[0]: new_block[found[0]]})] = value
        if found[0] == template:
            for j in copies:
                out[paths.renamed(path, {template: j})] = replace(value)
    return out


_NUMBER = re.compile(r"\d[\d,]*\d|\d")


def extrapolate(lines3: tuple[str, ...], lines4: tuple[str, ...], count: int, shallow: int = SHALLOW) -> tuple[str, ...]:
    """Notes of the full step from the notes of the SHALLOW- and CHECK-block steps: every integer that differs
    grows linearly with the blocks (``×3``/``×4`` -> ``×80``; ``layers.2``/``layers.3`` -> ``layers.79``)."""
    if len(lines3) != len(lines4):
        raise NotPeriodic("the notes differ in number")
    out = []
    for a, b in zip(lines3, lines4):
        pa, pb = _NUMBER.split(a), _NUMBER.split(b)
        na, nb = _NUMBER.findall(a), _NUMBER.findall(b)
        if pa != pb or len(na) != len(nb):
            raise NotPeriodic(f"a note changes with the blocks: {a!r}")
        text = [pa[0]]
        for x, y, rest in zip(na, nb, pa[1:]):
            if x == y:
                text.append(x)
            else:
                vx, vy = int(x.replace(",", "")), int(y.replace(",", ""))
                value = vx + (count - shallow) * (vy - vx)
                text.append(f"{value:,}" if "," in x or "," in y else str(value))
            text.append(rest)
        out.append("".join(text))
    return tuple(out)


def free_runs_sorted(events: list[tuple]) -> list[tuple]:
    """``events`` ((kind, op index, id, ...) in time order) with each run of consecutive frees after the same op
    sorted by id: the order in which storages die together (a checkpointed region's intermediates when it
    returns) changes neither the memory at any point nor the caching allocator's pools."""
    out, run = [], []
    for event in events:
        if event[0] == "free" and (not run or run[0][1] == event[1]):
            run.append(event)
            continue
        out += sorted(run, key=lambda e: e[2])
        run = [event] if event[0] == "free" else []
        if event[0] != "free":
            out.append(event)
    return out + sorted(run, key=lambda e: e[2])


def canonical(ops: list[OpRecord], lives: list[StorageLife], roles: StorageRoles, stats, start_free: bool = False):
    """A step's ops, storage events (identities by allocation order) and module statistics, for comparing a
    replicated step with a traced one; optimizer ops and events left out (``start_free``: the storages made
    before the first op compared as a set, empty ones left out)."""
    kept_ops = [replace(op, index=0) for op in ops if op.phase is not Phase.OPTIMIZER]
    events = []
    for life in lives:
        if life.alloc_phase is Phase.OPTIMIZER or (start_free and not life.nbytes):
            continue
        events.append((life.alloc_seq, "alloc", life.alloc_index, life.storage_id, life.nbytes, life.alloc_phase))
        if life.free_seq is not None and life.free_phase is not Phase.OPTIMIZER:
            events.append((life.free_seq, "free", life.free_index, life.storage_id, life.nbytes, life.free_phase))
    events.sort(key=lambda e: e[0])
    if start_free:   # storages allocated before the first op: compared as a set (by role and size)
        role_of = {sid: n for n, ids in enumerate((roles.weights, roles.buffers, roles.inputs, roles.gradients))
                   for sid in ids}
        start = [e for e in events if e[1] == "alloc" and e[2] == -1]
        start.sort(key=lambda e: (role_of.get(e[3], -1), e[4]))
        events = start + [e for e in events if not (e[1] == "alloc" and e[2] == -1)]
    names: dict[int, int] = {}
    shown = free_runs_sorted([(kind, index, names.setdefault(sid, len(names)), nbytes, phase)
                              for _, kind, index, sid, nbytes, phase in events])
    role_ids = tuple(tuple(sorted(names[s] for s in ids if s in names))
                     for ids in (roles.weights, roles.buffers, roles.inputs, roles.gradients))
    return kept_ops, shown, role_ids, {p: (s.calls, s.output_shapes, s.output_bytes) for p, s in stats.items()}


__all__ = ["MIN_BLOCKS", "NotPeriodic", "Plan", "Shallow", "Unrolled", "canonical", "extrapolate", "plan",
           "shallow_view", "signature", "unroll", "block_of", "free_runs_sorted"]
