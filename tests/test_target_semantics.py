"""engine/target: CUDA SDPA backend selection + dispatch and CUDA autocast on fake CPU tensors.

Expected values come from the 2.14.1 rules (sdp_utils.cpp filters, autocast_mode.h lists) and closed forms
of the saved tensors; the autocast checks also compare against PyTorch's own C++ CUDA autocast, run on fake
*CUDA* tensors (forward only: the autograd engine needs a GPU for backward, SDPA selection needs one too).
"""
from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from torchbudget.engine.target import CudaSemantics, SdpaNoKernelError, select_backend
from torchbudget.engine.target import autocast as ac
from torchbudget.engine.target import sdpa
from torchbudget.engine.tracing.storage import StorageTracker

BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32
H100, A100, T4, RTX3090, B200, RTX5090 = (9, 0), (8, 0), (7, 5), (8, 6), (10, 0), (12, 0)


# ------------------------------------------------------------------------------------------------------
# harness

class Recorder(TorchDispatchMode):
    """Records every aten op (name, output dtypes) and the storages ops create (StorageTracker)."""

    def __init__(self, preexisting=()):
        super().__init__()
        self.names: list[str] = []
        self.ops: list[tuple[str, tuple[str, ...]]] = []
        self.tracker = StorageTracker()
        for t in preexisting:
            self.tracker.track(t, -1)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func).removeprefix("aten.")
        if name.startswith("prim."):
            return out
        idx = len(self.names)
        self.names.append(name)
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.ops.append((name, tuple(str(t.dtype).removeprefix("torch.") for t in outs)))
        self.tracker.op_index = idx
        for t in outs:
            self.tracker.track(t, idx)
        return out

    def count(self, prefix: str) -> int:
        return sum(1 for n in self.names if n.split(".")[0] == prefix)

    def alive(self, op: str | None = None) -> list:
        lives = [life for life in self.tracker.lives if life.free_index is None and life.alloc_index >= 0]
        if op is not None:
            lives = [life for life in lives if self.names[life.alloc_index].split(".")[0] == op]
        return lives

    def alive_bytes(self, op: str | None = None) -> int:
        return sum(life.nbytes for life in self.alive(op))


@contextlib.contextmanager
def real_cuda_autocast(dtype):
    """torch.autocast("cuda", dtype) without the CUDA-availability check: the C++ AutocastCUDA kernels
    then cast fake CUDA tensors exactly as on a GPU."""
    saved = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
    torch.set_autocast_enabled("cuda", True)
    torch.set_autocast_dtype("cuda", dtype)
    torch.autocast_increment_nesting()
    try:
        yield
    finally:
        torch.set_autocast_enabled("cuda", saved[0])
        torch.set_autocast_dtype("cuda", saved[1])
        if torch.autocast_decrement_nesting() == 0:
            torch.clear_autocast_cache()


def autocast_nesting() -> int:
    level = torch.autocast_increment_nesting() - 1
    torch.autocast_decrement_nesting()
    return level


class CausalSelfAttention(nn.Module):
    """nanoGPT's attention block (pre-LN, fused qkv, SDPA with dropout in training)."""

    def __init__(self, n_embd=64, n_head=4, dropout=0.1):
        super().__init__()
        self.ln = nn.LayerNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.n_head, self.dropout = n_head, dropout

    def forward(self, x):
        B, S, C = x.shape
        q, k, v = self.qkv(self.ln(x)).split(C, dim=2)
        q, k, v = (t.view(B, S, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=True)
        return x + self.proj(y.transpose(1, 2).contiguous().view(B, S, C))


def trace_block(S, *, capability=H100, autocast=BF16, attention="auto", B=1, C=64, H=4, dropout=0.1):
    """Training forward of the block on fake CPU tensors under CudaSemantics; (recorder, semantics)."""
    with FakeTensorMode():
        block = CausalSelfAttention(C, H, dropout).train()
        x = torch.empty(B, S, C)
        params = list(block.parameters())
        sem = CudaSemantics(capability, autocast, attention, where=lambda: "h.0.attn")
        rec = Recorder(preexisting=[x, *params])
        with rec, sem:
            out = block(x)
        rec.out = out   # keep the output (and through it the autograd graph) alive for the inspection
    return rec, sem


# ------------------------------------------------------------------------------------------------------
# the GPT block: flash on H100, O(S) saved bytes

def test_gpt_block_on_h100_bf16_dropout_runs_flash_with_o_s_saved_bytes():
    B, S, C, H = 1, 1024, 64, 4
    D = C // H
    rec, sem = trace_block(S, B=B, C=C, H=H)
    # H100 + cuDNN 9.24 puts cuDNN first (check_prefer_cudnn_attention), but cuDNN's dropout resolution is
    # 1/16 and 0.1 is not a multiple of it (check_cudnn_dropout) -> flash, the next in priority
    assert rec.count("_scaled_dot_product_flash_attention") == 1
    assert rec.count("_scaled_dot_product_cudnn_attention") == 0 and rec.count("_safe_softmax") == 0
    (call,) = sem.sdpa_calls
    assert call.choice.backend == "flash" and call.choice.order[0] == "cudnn"
    assert [r.check for r in call.choice.rejected] == ["check_cudnn_dropout"]
    # saved for backward by the flash call: out (B,H,S,D) bf16 + logsumexp (B,H,S) fp32 + philox seed (2,)
    # and offset () uint64
    assert rec.alive_bytes("_scaled_dot_product_flash_attention") == B * H * S * D * 2 + B * H * S * 4 + 16 + 8
    assert not any(life.nbytes >= B * H * S * S for life in rec.alive())   # no S×S tensor survives
    note = sem.notes[0]
    assert note.startswith("attention: flash (sm90, bfloat16, head dim 16) ×1 in h.0.attn")
    assert "not cudnn: dropout_p=0.1 is not a multiple of 1/16" in note


def test_gpt_block_activations_grow_linearly_with_flash():
    small, _ = trace_block(1024)
    large, _ = trace_block(2048)
    ratio = large.alive_bytes() / small.alive_bytes()
    assert 1.9 <= ratio <= 2.15, ratio


def test_math_override_brings_back_the_quadratic_term():
    B, H = 1, 4
    small, sem = trace_block(1024, attention="math", B=B, H=H)
    large, _ = trace_block(2048, attention="math", B=B, H=H)
    assert small.count("_scaled_dot_product_flash_attention") == 0 and small.count("_safe_softmax") == 1
    assert sem.sdpa_calls[0].choice.backend == "math" and sem.sdpa_calls[0].choice.requested == "math"
    for rec, S in ((small, 1024), (large, 2048)):
        # the math composite on CUDA keeps, per (batch, head): softmax output fp32 (4 B), dropout output
        # fp32 (4 B) and the fused dropout's bool mask (1 B) per score
        quadratic = sum(life.nbytes for life in rec.alive() if life.nbytes >= B * H * S * S)
        assert quadratic == B * H * S * S * (4 + 4 + 1)
    attention_part = [rec.alive_bytes() - flash.alive_bytes() for rec, flash in
                      ((small, trace_block(1024)[0]), (large, trace_block(2048)[0]))]
    assert 3.9 <= attention_part[1] / attention_part[0] <= 4.0


def test_math_replica_matches_the_aten_composite_where_cpu_and_cuda_agree():
    """No mask, no dropout: the Python replica of _scaled_dot_product_attention_math records the same ops
    as the real composite (which has no device branch there)."""
    for dtype in (FP32, BF16):
        sequences = []
        for run in (lambda q, k, v: sdpa.math_attention_cuda(q, k, v),
                    lambda q, k, v: torch.ops.aten._scaled_dot_product_attention_math(q, k, v)[0]):
            with FakeTensorMode():
                q, k, v = (torch.empty(2, 3, 16, 8, dtype=dtype, requires_grad=True) for _ in range(3))
                rec = Recorder()
                with rec:
                    run(q, k, v)
            sequences.append([op for op in rec.ops if op[0] != "detach.default"])
        assert sequences[0] == sequences[1]


# ------------------------------------------------------------------------------------------------------
# backend selection rules

def _qkv(B=2, H=8, S=256, D=64, dtype=BF16, Hkv=None, Sk=None, requires_grad=True):
    Hkv, Sk = Hkv or H, Sk or S
    q = torch.empty(B, H, S, D, dtype=dtype, requires_grad=requires_grad)
    k = torch.empty(B, Hkv, Sk, D, dtype=dtype, requires_grad=requires_grad)
    v = torch.empty(B, Hkv, Sk, D, dtype=dtype, requires_grad=requires_grad)
    return q, k, v


@pytest.mark.parametrize("capability, dtype, D, dropout, expected, reasons", [
    # T4: flash needs sm80+, mem-efficient has no bf16 below sm80
    (T4, BF16, 64, 0.0, "math", ["check_flash_attention_hardware_support", "check_dtypes_mem_efficient"]),
    (T4, FP16, 64, 0.0, "efficient", ["check_flash_attention_hardware_support"]),
    # H100: cuDNN first; fp32 is not a cuDNN/flash dtype, mem-efficient takes it
    (H100, FP32, 64, 0.0, "efficient", ["check_dtypes_low_precision", "check_dtypes_flash_attention"]),
    # head dim 512: over cuDNN's 256 (sm90, cuDNN > 9.22) and flash's 256; mem-efficient has no limit
    (H100, FP16, 512, 0.0, "efficient", ["check_cudnn_tensor_shapes", "check_head_dim_size_flash"]),
    (H100, BF16, 64, 0.0, "cudnn", []),
    (H100, BF16, 64, 0.25, "cudnn", []),          # 0.25 = 4/16
    (A100, BF16, 64, 0.0, "flash", []),            # default order: flash first (no cuDNN preference on sm80)
    (B200, BF16, 128, 0.0, "cudnn", []),
    (RTX5090, BF16, 64, 0.0, "flash", []),         # sm120: no cuDNN preference
    # sm86 training with head dim 200: flash refuses (its backward), mem-efficient runs
    (RTX3090, FP16, 200, 0.0, "efficient", ["check_requires_grad_and_head_dim_gt192_constraints_on_sm86_89_or_120"]),
])
def test_selection_rules(capability, dtype, D, dropout, expected, reasons):
    with FakeTensorMode():
        q, k, v = _qkv(D=D, dtype=dtype)
        choice = select_backend(q, k, v, dropout_p=dropout, capability=capability)
    assert choice.backend == expected
    assert [r.check for r in choice.rejected] == reasons


def test_an_explicit_mask_rules_out_flash():
    with FakeTensorMode():
        q, k, v = _qkv()
        for mask in (torch.empty(2, 1, 256, 256, dtype=torch.bool), torch.empty(256, 256, dtype=BF16)):
            a100 = select_backend(q, k, v, mask, capability=A100)
            assert a100.backend == "efficient" and a100.rejected[0].check == "check_for_attn_mask"
            h100 = select_backend(q, k, v, mask, capability=H100)   # cuDNN takes 2-d and 4-d masks
            assert h100.backend == "cudnn"
        odd = torch.empty(2, 256, 256, dtype=torch.bool)            # 3-d: not a cuDNN mask shape
        h100 = select_backend(q, k, v, odd, capability=H100)
        assert h100.backend == "efficient"
        assert [r.check for r in h100.rejected] == ["check_attn_mask_shape", "check_for_attn_mask"]


def test_grouped_query_attention():
    with FakeTensorMode():
        q, k, v = _qkv(H=8, Hkv=2)
        # enable_gqa: cuDNN and flash both accept grouped heads natively
        assert select_backend(q, k, v, enable_gqa=True, capability=H100).backend == "cudnn"
        assert select_backend(q, k, v, dropout_p=0.1, enable_gqa=True, capability=H100).backend == "flash"
        # without enable_gqa differing head counts (other than 1) are rejected by every fused kernel
        off = select_backend(q, k, v, capability=H100)
        assert off.backend == "math"
        assert {r.check for r in off.rejected} == {"check_batch_size_and_num_heads_dense"}
        # MQA (one kv head) passes without enable_gqa (supports_mqa)
        q1, k1, v1 = _qkv(H=8, Hkv=1)
        assert select_backend(q1, k1, v1, capability=A100).backend == "flash"
        # the run: flash gets the 2 kv heads as they are (no repeat); math repeats them
        sem = CudaSemantics(H100)
        rec = Recorder()
        with rec, sem:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.1, enable_gqa=True)
        assert out.shape == q.shape and rec.count("repeat_interleave") == 0
        assert rec.count("_scaled_dot_product_flash_attention") == 1
        rec = Recorder()
        with rec, CudaSemantics(T4):
            F.scaled_dot_product_attention(q, k, v, enable_gqa=True)   # bf16 on T4: math
        # repeat_interleave(4, dim=-3) of k and v: unsqueeze, expand, clone (the 4x copy), view
        assert rec.count("clone") == 2 and rec.count("_safe_softmax") == 1


def test_cudnn_decode_disabled_on_blackwell_with_cudnn_9_24_0():
    with FakeTensorMode():
        q = torch.empty(4, 8, 1, 128, dtype=BF16)
        k = v = torch.empty(4, 8, 512, 128, dtype=BF16)
        b200 = select_backend(q, k, v, capability=B200, cudnn_version=92400)
        assert b200.backend == "flash" and b200.rejected[0].check == "check_cudnn_tensor_shapes"
        assert "decode" in b200.rejected[0].reason
        assert select_backend(q, k, v, capability=B200, cudnn_version=92401).backend == "cudnn"
        assert select_backend(q, k, v, capability=H100, cudnn_version=92400).backend == "cudnn"


def test_override_falls_back_with_a_reason_and_runtime_switches_are_read():
    with FakeTensorMode():
        q, k, v = _qkv()
        mask = torch.empty(256, 256, dtype=torch.bool)
        forced = select_backend(q, k, v, mask, capability=A100, attention="flash")
        assert forced.backend == "efficient" and forced.fell_back
        assert forced.override_rejection.check == "check_for_attn_mask"
        assert select_backend(q, k, v, capability=A100, attention="efficient").backend == "efficient"
        with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.EFFICIENT_ATTENTION]):
            assert select_backend(q, k, v, capability=H100).backend == "efficient"
            with pytest.raises(SdpaNoKernelError):   # the model allows only a backend that cannot run
                select_backend(q.float(), k, v, capability=T4)
        sem = CudaSemantics(A100, attention="flash", where=lambda: "blk")
        with sem:
            F.scaled_dot_product_attention(q, k, v, mask)
        assert "attention=flash requested but not usable" in sem.notes[0]


def test_flash_pads_odd_head_dims_and_unbatched_inputs_get_a_batch_dim():
    with FakeTensorMode():
        q = torch.empty(4, 128, 20, dtype=BF16, requires_grad=True)   # (H, S, D) unbatched, D = 20
        rec = Recorder()
        with rec, CudaSemantics(A100):
            out = F.scaled_dot_product_attention(q, q, q, is_causal=True)
        assert out.shape == (4, 128, 20)
        flash = [op for op in rec.ops if op[0].startswith("_scaled_dot_product_flash_attention")]
        assert len(flash) == 1 and rec.count("constant_pad_nd") == 3 and rec.count("slice") == 1


# ------------------------------------------------------------------------------------------------------
# autocast

def test_registered_cuda_autocast_ops_are_the_table():
    assert ac.registered_cuda_autocast_ops() == set(ac.CUDA_POLICIES) | {"_cudnn_rnn"}


def test_autocast_policies_on_the_cuda_lists():
    with FakeTensorMode():
        w = torch.empty(32, 16, requires_grad=True)
        x32 = torch.empty(4, 16)
        xb = torch.empty(4, 16, dtype=BF16)
        with CudaSemantics(H100, BF16):
            assert F.layer_norm(xb, (16,)).dtype == FP32          # fp32 (the CPU list runs it in bf16)
            assert F.linear(x32, w).dtype == BF16                 # lower_precision_fp
            assert F.softmax(xb, -1).dtype == FP32                # fp32_set_opt_dtype
            assert F.softmax(xb, -1, dtype=BF16).dtype == BF16    # an explicit dtype is kept
            assert torch.addcmul(xb, xb, x32).dtype == FP32       # promote: widest
            assert torch.addcmul(xb, xb, xb).dtype == BF16
            assert (xb + x32).dtype == FP32 and torch.cat([xb, x32]).dtype == FP32   # not on the list
            assert torch.exp(xb.double()).dtype == torch.float64  # fp64 is never cast
            with pytest.raises(RuntimeError, match="unsafe to autocast"):
                F.binary_cross_entropy(torch.sigmoid(x32), x32)
            with torch.autocast("cpu", enabled=False):             # model code: autocast(x.device.type, ...)
                assert F.linear(x32, w).dtype == FP32
            assert F.linear(x32, w).dtype == BF16


def test_cast_cache_casts_a_weight_used_twice_once():
    with FakeTensorMode():
        w = torch.empty(32, 16, requires_grad=True)     # a fp32 master weight: a leaf that requires grad
        x1, x2 = torch.empty(4, 16, dtype=BF16), torch.empty(8, 16, dtype=BF16)
        rec = Recorder()
        with rec, CudaSemantics(H100, BF16) as sem:
            F.linear(x1, w)
            F.linear(x2, w)
        assert rec.count("_to_copy") == 1 and sem.cache.hits == 1
        rec = Recorder()
        with rec, CudaSemantics(H100, BF16):
            w2 = w * 1                                  # not a leaf: cast per use
            F.linear(x1, w2)
            F.linear(x2, w2)
        assert rec.count("_to_copy") == 2
        rec = Recorder()
        with rec, CudaSemantics(H100, BF16, cache_enabled=False):
            F.linear(x1, w)
            F.linear(x2, w)
        assert rec.count("_to_copy") == 2


def test_a_composite_is_cast_once_and_its_insides_are_not_seen():
    """Inside __torch_function__ the mode is popped (2.14): F.linear -> one policy decision, no matmul."""
    with FakeTensorMode():
        x, w = torch.empty(2, 5, 16), torch.empty(8, 16, requires_grad=True)
        with CudaSemantics(H100, BF16) as sem:
            F.linear(x, w)
            F.normalize(x)   # Python: re-dispatched, its inner linalg_vector_norm is seen
    assert sem.autocast_counts == {("lower_precision_fp", "linear"): 1,
                                   ("fp32_set_opt_dtype", "linalg_vector_norm"): 1}


def _run_ops(fn, specs, device, semantics):
    with FakeTensorMode():
        tensors = [torch.empty(shape, dtype=dtype, device=device, requires_grad=rg) for shape, dtype, rg in specs]
        rec = Recorder()
        with (semantics() if semantics else real_cuda_autocast(BF16)), rec:
            fn(*tensors)
    return [op for op in rec.ops if op[0] != "detach.default"]


AUTOCAST_CASES = {
    "mlp": (lambda x, w1, w2, g: torch.log(F.softmax(F.linear(F.gelu(F.linear(F.layer_norm(x, (16,), g), w1)),
                                                                w2), -1)).sum(),
            [((4, 8, 16), FP32, False), ((32, 16), FP32, True), ((16, 32), FP32, True), ((16,), FP32, True)]),
    "pointwise": (lambda x, y: x.pow(2) + x.rsqrt() + torch.exp(x) + 1 / x + torch.addcmul(x, y, x) + x.cumsum(0)
                  + x.prod(1, keepdim=True), [((4, 16), BF16, False), ((4, 16), FP32, False)]),
    "norms": (lambda x: (torch.norm(x, dim=1), F.normalize(x), torch.logsumexp(x, 1), torch.linalg.vector_norm(x),
                         x.norm(), torch.dist(x, x)), [((4, 16), BF16, False)]),
    "losses": (lambda x, t, p: (F.cross_entropy(x, t), F.cross_entropy(x, t, label_smoothing=0.1),
                                F.cross_entropy(x, p), F.mse_loss(x, p), F.kl_div(x, p, reduction="batchmean"),
                                F.binary_cross_entropy_with_logits(x, p), F.nll_loss(x, t)),
               [((8, 10), BF16, True), ((8,), torch.int64, False), ((8, 10), BF16, False)]),
    "cross_entropy_3d": (lambda x, t: F.cross_entropy(x, t, reduction="none"),
                         [((2, 10, 7), BF16, True), ((2, 7), torch.int64, False)]),
    "vision": (lambda x, w, wt: (F.interpolate(F.conv2d(x, w), scale_factor=2, mode="bilinear"),
                                 F.group_norm(x, 1), F.conv_transpose2d(x, wt)),
               [((1, 3, 8, 8), FP32, False), ((4, 3, 3, 3), FP32, True), ((3, 2, 3, 3), FP32, True)]),
    "matmuls": (lambda a, b: (torch.bmm(a, b), torch.baddbmm(a @ b, a, b), torch.einsum("bij,bjk->bik", a, b),
                              F.cosine_similarity(a, a), torch.cdist(a, a)),
                [((2, 4, 4), FP32, False), ((2, 4, 4), FP32, False)]),
    "unlisted": (lambda x, y: (F.softplus(x), torch.cat([x, y]), torch.where(x > 0, x, y), F.silu(x).mean()),
                 [((4, 16), BF16, False), ((4, 16), FP32, False)]),
    "dropout": (lambda x: F.dropout(x, 0.1, True), [((4, 16), FP32, True)]),
}


@pytest.mark.parametrize("case", sorted(AUTOCAST_CASES))
def test_autocast_matches_pytorchs_cuda_autocast_op_for_op(case):
    fn, specs = AUTOCAST_CASES[case]
    reference = _run_ops(fn, specs, "cuda", None)          # C++ AutocastCUDA on fake CUDA tensors
    ours = _run_ops(fn, specs, "cpu", lambda: CudaSemantics(H100, BF16))
    assert ours == reference


def test_fp16_softmax_to_float_uses_the_half_to_float_kernel_as_on_cuda():
    fn, specs = (lambda x: (F.softmax(x, -1), F.log_softmax(x, -1)), [((4, 16), FP16, True)])
    with FakeTensorMode():
        cuda = [torch.empty(s, dtype=d, device="cuda", requires_grad=r) for s, d, r in specs]
        rec_cuda = Recorder()
        with real_cuda_autocast(FP16), rec_cuda:
            fn(*cuda)
    ours = _run_ops(fn, specs, "cpu", lambda: CudaSemantics(H100, FP16))
    assert ours == [op for op in rec_cuda.ops if op[0] != "detach.default"]
    assert [op[0] for op in ours] == ["_softmax.default", "_log_softmax.default"]


# ------------------------------------------------------------------------------------------------------
# interplay with the recorder, checkpointing, and leaving no state behind

def test_an_outer_dispatch_mode_sees_the_cuda_ops_forward_and_backward():
    with FakeTensorMode():
        q, k, v = _qkv(dtype=FP32)
        rec = Recorder()
        with rec:
            with CudaSemantics(H100, BF16):
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            out.float().sum().backward()
    assert rec.count("_scaled_dot_product_cudnn_attention") == 1
    assert rec.count("_scaled_dot_product_cudnn_attention_backward") == 1
    assert rec.count("_to_copy") >= 3 and q.grad.dtype == FP32


def test_checkpoint_recompute_runs_under_cuda_semantics_too():
    with FakeTensorMode():
        block = CausalSelfAttention(64, 4, dropout=0.0).train()
        x = torch.empty(1, 128, 64, requires_grad=True)
        sem = CudaSemantics(H100, BF16)
        rec = Recorder()
        with rec:
            with sem:
                out = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False,
                                                        context_fn=sem.checkpoint_context_fn())
            out.float().sum().backward()
    assert [c.recompute for c in sem.sdpa_calls] == [False, True]
    assert rec.count("_scaled_dot_product_cudnn_attention") == 2
    assert "(+1 recomputed by checkpointing)" in sem.notes[0]


def test_no_state_is_left_behind_even_after_an_exception():
    before = (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), torch.is_autocast_enabled("cuda"),
              torch.get_autocast_dtype("cuda"), torch.is_autocast_cache_enabled(), autocast_nesting(),
              torch._C._get_sdp_priority_order(), torch.backends.cuda.flash_sdp_enabled())

    def state():
        return (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), torch.is_autocast_enabled("cuda"),
                torch.get_autocast_dtype("cuda"), torch.is_autocast_cache_enabled(), autocast_nesting(),
                torch._C._get_sdp_priority_order(), torch.backends.cuda.flash_sdp_enabled())

    with FakeTensorMode():
        q, k, v = _qkv()
        sem = CudaSemantics(H100, FP16, cache_enabled=False)
        with pytest.raises(ValueError, match="boom"):
            with sem:
                assert torch._C._len_torch_function_stack() == 1 and torch.is_autocast_enabled("cpu")
                F.scaled_dot_product_attention(q, k, v)
                raise ValueError("boom")
        assert torch._C._len_torch_function_stack() == 0 and state() == before and len(sem.cache) == 0
        with CudaSemantics(T4):
            F.scaled_dot_product_attention(q, k, v)
        assert torch._C._len_torch_function_stack() == 0 and state() == before
    # after exit, SDPA is the CPU one again
    with FakeTensorMode():
        q, k, v = _qkv(dtype=FP32)
        rec = Recorder()
        with rec:
            F.scaled_dot_product_attention(q, k, v)
        assert rec.count("_scaled_dot_product_flash_attention_for_cpu") == 1


def test_multihead_attention_uses_sdpa_only_without_weights():
    """F.multi_head_attention_forward (Python; its Tensor.unflatten ends in the C twin) runs under the mode:
    need_weights=False goes through SDPA (the GPU's backend), need_weights=True through bmm + softmax."""
    with FakeTensorMode():
        mha = nn.MultiheadAttention(64, 4, batch_first=True, dropout=0.0)
        x = torch.empty(2, 128, 64)
        for need_weights, sdpa_calls in ((False, 1), (True, 0)):
            rec = Recorder()
            with rec, CudaSemantics(A100, BF16) as sem:
                out, weights = mha(x, x, x, need_weights=need_weights)
            assert len(sem.sdpa_calls) == sdpa_calls and out.dtype == BF16
            assert rec.count("_scaled_dot_product_flash_attention") == sdpa_calls
            assert (weights is None) is (not need_weights)
        layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.1, batch_first=True).train()
        rec = Recorder()
        with rec, CudaSemantics(H100, BF16) as sem:
            out = layer(x)
        out.float().sum().backward()
        assert [c.choice.backend for c in sem.sdpa_calls] == ["flash"]   # dropout 0.1: not cuDNN
        assert rec.count("native_dropout") == 3 and rec.count("bernoulli_") == 0   # CUDA's fused dropout


def test_checkpoint_context_fn_outside_and_inside_the_mode():
    from torchbudget.engine.target import active_semantics, checkpoint_context_fn
    assert active_semantics() is None
    outside = checkpoint_context_fn()()
    assert all(isinstance(c, contextlib.nullcontext) for c in outside)
    with CudaSemantics(H100) as sem:
        assert active_semantics() is sem
        _, recompute = checkpoint_context_fn()()
        assert isinstance(recompute, CudaSemantics) and recompute.target == sem.target
