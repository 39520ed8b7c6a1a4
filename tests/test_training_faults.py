"""Training refuses broken inputs and stops loudly when it diverges: absurd learning rates,
non-finite teacher scores, files that are not gzip, non-finite losses / gradients / weights
(the run stops and nothing of that step is saved), checkpoints altered on disk, ``--resume``
with nothing to resume, and where training logs go by default."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from mice_bench.errors import UsageError
from mice_bench.results import default_results_dir
from mice_bench.training import make_config, train
from mice_bench.training.data import read_jsonl
from mice_bench.training.state import list_checkpoints, read_checkpoint
from mice_bench.training.trainer import TrainingDiverged
from test_training import _cli, cfg_for, synthetic, tiny_model, write_jsonl
from test_training import tiny_dir  # noqa: F401  (a fixture)

KW = dict(variant="ce", group_size=4, batch_size=8, steps=5, lr=1e-3, warmup=1,
          checkpoint_every=1, val_queries=4, val_every=0)


# --------------------------------------------------------------------------- options
@pytest.mark.parametrize("lr", [float("inf"), float("nan"), 1e30, 2.0, 0.0, -1e-5])
def test_absurd_learning_rates_are_refused_up_front(tmp_path, lr):
    with pytest.raises(UsageError, match="--lr must be"):
        cfg_for(tmp_path, lr=lr)


@pytest.mark.parametrize("name", ["adam_eps", "weight_decay", "grad_clip"])
def test_non_finite_optimizer_options_are_refused(tmp_path, name):
    for v in (float("nan"), float("inf")):
        with pytest.raises(UsageError, match=f"--{name.replace('_', '-')} must be"):
            cfg_for(tmp_path, **{name: v})


def test_cli_lr_inf_exits_2_in_one_line_and_writes_nothing(tmp_path):
    write_jsonl(tmp_path / "data.jsonl")
    for lr in ("inf", "1e30"):
        r = _cli("-m", "mice_bench.cli", "train", "--model", "minilm-l6", "--data",
                 str(tmp_path / "data.jsonl"), "--output", str(tmp_path / "o"), "--lr", lr,
                 "--log-dir", str(tmp_path / "logs"), "--no-progress")
        assert r.returncode == 2, r.stderr
        assert "--lr must be" in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.train").exists()


# --------------------------------------------------------------------------- data
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1e39])
def test_non_finite_teacher_scores_are_refused_naming_the_line(tmp_path, bad):
    p = write_jsonl(tmp_path / "data.jsonl", n=6, scores=True)
    lines = p.read_text().splitlines()
    obj = json.loads(lines[3])
    obj["scores"][2] = bad
    lines[3] = json.dumps(obj)          # json writes NaN / Infinity, and json reads them
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=r"data\.jsonl:4: 'scores' holds .*finite"):
        read_jsonl(str(p))


def test_non_finite_teacher_scores_given_in_memory_are_refused(tmp_path):
    data = synthetic(n_train=10, n_val=2)
    data.teacher = {q: {d: 1.0 for d in data.positives[q] + data.negatives[q]}
                    for q in data.queries}
    q = data.qids[3]
    data.teacher[q][data.negatives[q][0]] = float("nan")
    cfg = cfg_for(tmp_path, loss="marginmse", **{**KW, "group_size": 2})
    with pytest.raises(UsageError, match="teacher score .* not a finite number"):
        train(cfg, model=tiny_model("ce", hidden=32), data=data)
    assert not Path(cfg.output).exists() and not cfg.work_dir.exists()


def test_gz_file_that_is_not_gzip_and_a_damaged_one(tmp_path):
    plain = write_jsonl(tmp_path / "data.jsonl", n=10)
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_bytes(plain.read_bytes())
    with pytest.raises(UsageError, match=r"fake\.jsonl\.gz: not a gzip file"):
        read_jsonl(str(fake))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(plain.read_bytes() * 20)[:300])
    with pytest.raises(UsageError, match=r"cut\.jsonl\.gz: damaged gzip data after line"):
        read_jsonl(str(cut))
    good = tmp_path / "good.jsonl.gz"
    good.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_jsonl(str(good), val_queries=0).fingerprint() == \
        read_jsonl(str(plain), val_queries=0).fingerprint()
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"query": "caf\xe9", "positive": "p", "negatives": ["n"]}\n')
    with pytest.raises(UsageError, match="not UTF-8 text"):
        read_jsonl(str(latin))
    r = _cli("-m", "mice_bench.cli", "train", "--model", "minilm-l6", "--data", str(fake),
             "--output", str(tmp_path / "o"), "--log-dir", str(tmp_path / "logs"),
             "--no-progress")
    assert r.returncode == 2 and "not a gzip file" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------- divergence
def _assert_stopped(tmp_path, cfg, at: int):
    """Nothing of step ``at`` was saved: checkpoints only before it, no output, a log that
    says diverged at that step."""
    steps = [int(p.stem.split("-")[1]) for p in list_checkpoints(cfg.work_dir)]
    assert steps and max(steps) == at - 1, steps
    assert not Path(cfg.output).exists()
    log = json.loads((tmp_path / "logs" / f"{Path(cfg.output).name}.json").read_text())
    assert log["status"] == "diverged" and log["diverged"]["step"] == at
    for p in list_checkpoints(cfg.work_dir):      # every checkpoint left is sound
        st = read_checkpoint(p)
        assert all(torch.isfinite(v).all() for v in st["model"].values()
                   if v.is_floating_point())
    return log


def test_non_finite_loss_stops_the_run(tmp_path):
    data = synthetic(n_train=40, n_val=4)
    model = tiny_model("ce", hidden=32)
    calls = {"n": 0}

    def poison(module, args, out):      # the 3rd step's scores become NaN
        calls["n"] += 1
        return out * float("nan") if calls["n"] == 4 else out   # call 1: the probe pass
    model.register_forward_hook(poison)
    cfg = cfg_for(tmp_path, **KW)
    with pytest.raises(TrainingDiverged, match=r"step 3: the loss is not finite"):
        train(cfg, model=model, data=data)
    _assert_stopped(tmp_path, cfg, 3)


def test_non_finite_gradient_stops_the_run(tmp_path):
    data = synthetic(n_train=40, n_val=4)
    model = tiny_model("ce", hidden=32)
    p = model.backbone.cls_w.requires_grad_(True)
    calls = {"n": 0}

    def poison(g):
        calls["n"] += 1
        return g * float("inf") if calls["n"] == 3 else g    # call 1: the probe pass
    p.register_hook(poison)
    cfg = cfg_for(tmp_path, **KW)
    with pytest.raises(TrainingDiverged, match=r"step 2: the gradient norm is not finite"):
        train(cfg, model=model, data=data)
    _assert_stopped(tmp_path, cfg, 2)


def test_weights_that_become_non_finite_stop_the_run(tmp_path):
    from torch.optim.optimizer import register_optimizer_step_post_hook

    data = synthetic(n_train=40, n_val=4)
    model = tiny_model("ce", hidden=32)
    seen = {"n": 0}

    def blow_up(opt, args, kwargs):     # the 4th optimizer step leaves an inf weight
        seen["n"] += 1
        if seen["n"] == 4:
            with torch.no_grad():
                opt.param_groups[0]["params"][0].view(-1)[0] = float("inf")
    handle = register_optimizer_step_post_hook(blow_up)
    try:
        cfg = cfg_for(tmp_path, **KW)
        with pytest.raises(TrainingDiverged, match=r"step 4: weights are not finite"):
            train(cfg, model=model, data=data)
    finally:
        handle.remove()
    _assert_stopped(tmp_path, cfg, 4)


def test_cli_divergence_is_one_line_exit_1(tmp_path):
    """A model whose weights overflow in the forward pass: exit 1, one line, no output."""
    m = tiny_model("ce", hidden=32)
    with torch.no_grad():
        m.backbone.cls_w.fill_(3e38)          # the scores overflow to inf, the loss is NaN
    m.save_pretrained(tmp_path / "huge")
    write_jsonl(tmp_path / "data.jsonl")
    r = _cli("-m", "mice_bench.cli", "train", "--model", str(tmp_path / "huge"), "--data",
             str(tmp_path / "data.jsonl"), "--output", str(tmp_path / "o"), "--steps", "3",
             "--batch-size", "4", "--group-size", "2", "--val-queries", "0",
             "--query-max-tokens", "8", "--doc-max-tokens", "16",
             "--log-dir", str(tmp_path / "logs"), "--cache-dir", str(tmp_path / "c"),
             "--no-progress")
    if r.returncode == 2:
        pytest.skip(f"the checkpoint is refused when loaded: {r.stderr.strip()}")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "training stopped at step 1" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o").exists() and not list_checkpoints(tmp_path / "o.train")
    assert json.loads((tmp_path / "logs" / "o.json").read_text())["status"] == "diverged"


# --------------------------------------------------------------------------- checkpoints
def _killed_run(tmp_path, name="b"):
    from test_training import _Kill

    data = synthetic(n_train=40, n_val=4)
    kw = {**KW, "steps": 6, "checkpoint_every": 2}
    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(tmp_path, name, **kw), _Kill(5), model=tiny_model("ce", hidden=32),
              data=data)
    return data, kw


def test_altered_checkpoints_are_refused_by_name(tmp_path):
    data, kw = _killed_run(tmp_path)
    last = list_checkpoints(tmp_path / "b.train")[-1]
    good = last.read_bytes()
    resume = cfg_for(tmp_path, "b", resume=True, **kw)
    cases = []
    flipped = bytearray(good)
    for i in range(len(good) // 2, len(good) // 2 + 64):   # payload bytes in the middle
        flipped[i] ^= 0xFF
    cases.append((bytes(flipped), "fails its SHA-256 check"))
    cases.append((good[:-100], "is truncated"))
    cases.append((good + b"\0" * 10, "is truncated or padded"))
    cases.append((good[good.index(b"\n") + 1:], "no header"))   # a plain torch.save file
    cases.append((b"mice-bench-checkpoint {broken\n" + good, "damaged header"))
    for blob, why in cases:
        last.write_bytes(blob)
        with pytest.raises(UsageError, match=rf"{last.name} .*{why}"):
            train(resume, model=tiny_model("ce", hidden=32), data=data)
    assert not (tmp_path / "b").exists()
    last.write_bytes(good)                                   # the intact file resumes
    res = train(resume, model=tiny_model("ce", hidden=32), data=data)
    assert res.steps == 6 and (tmp_path / "b").is_dir()


def test_checkpoint_with_non_finite_weights_is_refused(tmp_path):
    from mice_bench.training.state import write_checkpoint

    data, kw = _killed_run(tmp_path)
    last = list_checkpoints(tmp_path / "b.train")[-1]
    st = read_checkpoint(last)
    k = next(k for k, v in st["model"].items() if v.is_floating_point())
    st["model"][k] = st["model"][k].clone().fill_(float("nan"))
    write_checkpoint(last, st)                               # a valid checksum over NaN
    with pytest.raises(UsageError, match=rf"{last.name} has non-finite weights"):
        train(cfg_for(tmp_path, "b", resume=True, **kw), model=tiny_model("ce", hidden=32),
              data=data)


def test_resume_with_nothing_to_resume_says_so(tmp_path):
    data = synthetic(n_train=40, n_val=4)
    cfg = cfg_for(tmp_path, "never", resume=True, **KW)
    with pytest.raises(UsageError, match=r"nothing to resume .*there is no .*never\.train"):
        train(cfg, model=tiny_model("ce", hidden=32), data=data)
    (tmp_path / "never.train").mkdir()          # a run that stopped before its first one
    with pytest.raises(UsageError, match=r"nothing to resume .*holds no checkpoint"):
        train(cfg, model=tiny_model("ce", hidden=32), data=data)
    assert not (tmp_path / "never").exists()
    write_jsonl(tmp_path / "data.jsonl")
    r = _cli("-m", "mice_bench.cli", "train", "--model", "minilm-l6", "--data",
             str(tmp_path / "data.jsonl"), "--output", str(tmp_path / "cli"), "--resume",
             "--log-dir", str(tmp_path / "logs"), "--no-progress")
    assert r.returncode == 2 and "nothing to resume" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------- logs
def test_training_logs_go_to_the_ad_hoc_results_folder_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("MICE_BENCH_RESULTS", raising=False)
    c = make_config(data="x.jsonl", output="o")
    assert Path(c.log_dir) == default_results_dir("training") == \
        Path("mice-bench-results") / "training"
    monkeypatch.setenv("MICE_BENCH_RESULTS", str(tmp_path / "mine"))
    assert Path(make_config(data="x.jsonl", output="o").log_dir) == tmp_path / "mine" / \
        "training"
    assert make_config(data="x.jsonl", output="o", log_dir="results/training").log_dir == \
        "results/training"                                    # only when asked


def test_cli_without_log_dir_writes_outside_the_tracked_results(tmp_path, tiny_dir):  # noqa: F811
    write_jsonl(tmp_path / "data.jsonl")
    r = _cli("-m", "mice_bench.cli", "train", "--model", str(tiny_dir), "--data",
             str(tmp_path / "data.jsonl"), "--output", str(tmp_path / "adhoc"), "--steps", "2",
             "--batch-size", "4", "--group-size", "2", "--val-queries", "0",
             "--query-max-tokens", "8", "--doc-max-tokens", "16",
             "--cache-dir", str(tmp_path / "c"), "--no-progress",
             env={"MICE_BENCH_RESULTS": str(tmp_path / "res")})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "res" / "training" / "adhoc.json").is_file()
    repo = Path(__file__).resolve().parents[1]
    assert not (repo / "results" / "training" / "adhoc.json").exists()


def test_log_file_is_named_by_the_one_slug_rule(tmp_path):
    from mice_bench.naming import slug

    data = synthetic(n_train=20, n_val=0)
    res = train(cfg_for(tmp_path, "my run [seed=1]", **{**KW, "steps": 1, "val_queries": 0}),
                model=tiny_model("ce", hidden=32), data=data)
    assert res.log_path == tmp_path / "logs" / "my_run_seed_1.json" == \
        tmp_path / "logs" / f"{slug('my run [seed=1]')}.json"
    assert res.log_path.is_file()


def test_a_teacher_that_scores_non_finite_is_refused_and_nothing_cached(tmp_path):
    from mice_bench.training.data import teacher_scores

    data = synthetic(n_train=6, n_val=0)
    teacher = tiny_model("ce", hidden=32)
    with torch.no_grad():
        teacher.backbone.cls_w.fill_(float("inf"))      # every score is +-inf or NaN
    with pytest.raises(UsageError, match=r"--teacher huge: \d+ of \d+ teacher scores are not "
                                         "finite"):
        teacher_scores(data, teacher, "huge", tmp_path / "cache", batch_size=16)
    assert not list((tmp_path / "cache").rglob("*.json"))
