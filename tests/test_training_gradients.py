"""The gradient each optimizer step applies, against an independent computation.

The reference here is the gradient of the whole batch's mean loss, computed in one forward
and backward pass of a second copy of the model with the listwise loss written out by hand
(``-log_softmax(s)[:, 0]``), clipped by hand to ``grad_clip``. The trainer's gradient is read
at the moment AdamW applies it (a ``torch.optim`` step pre-hook): with gradient accumulation
1, 2 or 4, with and without clipping, and with a gradient scaler (loss scaling), it must be
that reference. (AdamW's first steps hardly depend on the gradient's scale, so comparing
weights alone would not see a gradient divided twice.) The learning rate of every step is
compared with Hugging Face's schedules.
"""

from __future__ import annotations

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from mice_bench.distributed import DistEnv
from mice_bench.training import train
from mice_bench.training.data import sample_groups
from mice_bench.training.trainer import Trainer
from test_training import cfg_for, synthetic, tiny_model

B, G = 8, 4


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Applied:
    """Records, at every optimizer step, each parameter's gradient (by name) and the lr."""

    def __init__(self, model):
        self.names = {id(p): n for n, p in model.named_parameters()}
        self.grads: list[dict[str, torch.Tensor]] = []
        self.weights: list[dict[str, torch.Tensor]] = []    # before each step
        self.lrs: list[float] = []

    def __call__(self, opt, args, kwargs):
        g, w = {}, {}
        for group in opt.param_groups:
            for p in group["params"]:
                if id(p) in self.names:
                    w[self.names[id(p)]] = p.detach().clone()
                    if p.grad is not None:
                        g[self.names[id(p)]] = p.grad.detach().clone()
        if g:
            self.grads.append(g)
            self.weights.append(w)
            self.lrs.append(opt.param_groups[0]["lr"])

    def __enter__(self):
        self.handle = register_optimizer_step_pre_hook(self)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def reference_gradient(data, step: int, clip: float, seed: int = 0,
                       weights: dict | None = None) -> dict[str, torch.Tensor]:
    """The gradient of step ``step`` at ``weights`` (default: the initial ones): the full
    batch in one pass, LCE by hand, clipped by hand."""
    model = tiny_model("ce", hidden=32)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if weights is not None and n in weights:
                p.copy_(weights[n])
    model.train()
    model.requires_grad_(True)
    groups = sample_groups(data, step, B, G, seed)
    qs = [g.query for g in groups for _ in range(G)]
    ds = [d for g in groups for d in g.docs]
    s = model(qs, ds).float().view(B, G)
    loss = -(s.log_softmax(dim=-1)[:, 0]).mean()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()
             if p.grad is not None}
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values())).item()
    coef = min(1.0, clip / (norm + 1e-6)) if clip > 0 else 1.0
    return {n: g * coef for n, g in grads.items()}, norm


def assert_same(got: dict, want: dict, what: str):
    assert got.keys() == want.keys(), (what, sorted(set(got) ^ set(want)))
    diff = torch.sqrt(sum(((got[n] - want[n]).double() ** 2).sum() for n in want))
    total = torch.sqrt(sum((want[n].double() ** 2).sum() for n in want))
    assert diff <= 1e-4 * total, (what, float(diff / total))   # float noise: ~1e-6
    scale = max(g.abs().max().item() for g in want.values())
    for n in want:
        assert torch.allclose(got[n], want[n], rtol=1e-3, atol=1e-3 * scale), (what, n)


def _cfg(tmp_path, name, **kw):
    base = dict(variant="ce", loss="lce", group_size=G, batch_size=B, steps=1, lr=1e-3,
                warmup=0, schedule="constant", weight_decay=0.0, val_queries=0,
                save_checkpoints=False)
    return cfg_for(tmp_path, name, **{**base, **kw})


@pytest.mark.parametrize("accum", [1, 2, 4])
def test_accumulated_gradient_is_the_full_batch_gradient(tmp_path, one_thread, accum):
    data = synthetic(n_train=40, n_val=0)
    want, norm = reference_gradient(data, 0, clip=0.0)
    model = tiny_model("ce", hidden=32)
    with Applied(model) as rec:
        train(_cfg(tmp_path, f"a{accum}", grad_accum=accum, grad_clip=0.0), model=model,
              data=data)
    assert len(rec.grads) == 1
    assert_same(rec.grads[0], want, f"grad_accum {accum}")


def test_every_step_applies_the_same_gradient_for_accumulation_1_and_4(tmp_path, one_thread):
    """Over several steps: the same gradient for both, and each is the reference gradient of
    that step's groups at that step's weights (gradients are reset between steps)."""
    data = synthetic(n_train=40, n_val=0)
    runs = {}
    for accum in (1, 4):
        model = tiny_model("ce", hidden=32)
        with Applied(model) as rec:
            train(_cfg(tmp_path, f"s{accum}", steps=4, grad_accum=accum, grad_clip=1.0),
                  model=model, data=data)
        runs[accum] = rec
    assert len(runs[1].grads) == len(runs[4].grads) == 4
    for step, (g1, g4) in enumerate(zip(runs[1].grads, runs[4].grads)):
        assert_same(g4, g1, f"step {step}")
        assert any(not torch.equal(g1[n], runs[1].grads[0][n]) for n in g1) or step == 0
        for accum, rec in runs.items():      # each step's own gradient, nothing carried over
            want, _ = reference_gradient(data, step, clip=1.0, weights=rec.weights[step])
            assert_same(rec.grads[step], want, f"step {step}, grad_accum {accum}")


@pytest.mark.parametrize("accum", [1, 4])
def test_clipping_acts_on_the_accumulated_gradient(tmp_path, one_thread, accum):
    data = synthetic(n_train=40, n_val=0)
    _, norm = reference_gradient(data, 0, clip=0.0)
    clip = norm / 5                       # active: the applied gradient is scaled by 1/5
    want, _ = reference_gradient(data, 0, clip=clip)
    model = tiny_model("ce", hidden=32)
    with Applied(model) as rec:
        train(_cfg(tmp_path, f"c{accum}", grad_accum=accum, grad_clip=clip), model=model,
              data=data)
    got = rec.grads[0]
    assert_same(got, want, f"clipped, grad_accum {accum}")
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in got.values())).item()
    assert total == pytest.approx(norm * clip / (norm + 1e-6), rel=1e-4)   # torch's eps


@pytest.mark.parametrize("clip_factor", [0.2, 0.0])
def test_loss_scaling_unscales_before_clipping_with_accumulation(tmp_path, one_thread,
                                                                 clip_factor):
    """A gradient scaler (as fp16 uses; here on CPU with a scale of 1024): the gradient
    applied is the unscaled one, clipped after unscaling."""
    data = synthetic(n_train=40, n_val=0)
    _, norm = reference_gradient(data, 0, clip=0.0)
    clip = norm * clip_factor
    want, _ = reference_gradient(data, 0, clip=clip)
    model = tiny_model("ce", hidden=32)
    cfg = _cfg(tmp_path, f"fp16-{clip_factor}", grad_accum=4, grad_clip=clip)
    trainer = Trainer(cfg, model, data, env=DistEnv(), device=torch.device("cpu"))
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    with Applied(model) as rec:
        st = trainer.step(0)
    assert not st.skipped and len(rec.grads) == 1
    assert st.grad_norm == pytest.approx(norm, rel=1e-4)   # the unscaled norm
    assert_same(rec.grads[0], want, f"scaled, clip {clip}")


def test_learning_rates_follow_hugging_face_schedules(tmp_path, one_thread):
    from transformers import (get_constant_schedule_with_warmup,
                              get_linear_schedule_with_warmup)

    data = synthetic(n_train=40, n_val=0)
    for schedule, make in (("linear", get_linear_schedule_with_warmup),
                           ("constant", get_constant_schedule_with_warmup)):
        model = tiny_model("ce", hidden=32)
        with Applied(model) as rec:
            train(_cfg(tmp_path, f"lr-{schedule}", steps=7, warmup=3, schedule=schedule,
                       lr=1e-3, batch_size=4), model=model, data=data)
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        sched = make(opt, 3, 7) if schedule == "linear" else make(opt, 3)
        want = []
        for _ in range(7):
            want.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        # step 0 of a warm-up has lr 0: AdamW is still called (the hook sees lr 0)
        assert rec.lrs == pytest.approx(want, abs=1e-12), (schedule, rec.lrs, want)


def test_one_adamw_step_by_hand_decays_only_matrices(tmp_path, one_thread):
    """The weights after one step against AdamW's first step written out: decoupled weight
    decay ``p *= 1 - lr * wd`` on matrices only (not on biases or LayerNorm weights), then
    ``p -= lr * g / (|g| + eps)`` (the bias-corrected moments of one step). A large eps makes
    the update proportional to the gradient, so its scale shows too."""
    data = synthetic(n_train=40, n_val=0)
    want, _ = reference_gradient(data, 0, clip=0.0)
    lr, wd, eps = 0.5, 0.1, 1.0
    init = {n: p.detach().clone() for n, p in tiny_model("ce", hidden=32).named_parameters()}
    model = tiny_model("ce", hidden=32)
    train(_cfg(tmp_path, "adamw", grad_accum=2, grad_clip=0.0, lr=lr, weight_decay=wd,
               adam_eps=eps), model=model, data=data)
    got = dict(model.named_parameters())
    for n, p0 in init.items():
        if n not in want:                      # not used by the variant: left as it was
            assert torch.equal(got[n], p0), n
            continue
        g = want[n]
        expect = p0 * (1 - lr * wd) if p0.ndim >= 2 else p0.clone()
        expect = expect - lr * g / (g.abs() + eps)
        assert torch.allclose(got[n], expect, rtol=1e-5, atol=1e-6), n
