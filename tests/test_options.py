"""Each command option is declared once, on its command's configuration dataclass: the Click
command that Typer builds has exactly the declared options (flag, help, group, hidden,
required, how it is spelled), ``--help`` lists them, and the equivalent command line of any
configuration gives that configuration back through the real command line."""

from __future__ import annotations

import dataclasses
import random

import click
import pytest
import typer
from typer.testing import CliRunner

from mice_bench.cli import app
from mice_bench.effectiveness.plan import EffectivenessConfig, ModelRef
from mice_bench.effectiveness.storecli import SHARED, StoreTarget
from mice_bench.errors import UsageError
from mice_bench.latency.config import LatencyConfig
from mice_bench.options import Display, ProgressBar, to_args
from mice_bench.training.config import TrainConfig

COMMANDS = {"effectiveness": (EffectivenessConfig, Display),
            "latency": (LatencyConfig, ProgressBar), "train": (TrainConfig,),
            "store build": (StoreTarget, (EffectivenessConfig, SHARED), ProgressBar)}


def declared_options(classes):
    """``{field: metadata option}`` read straight from the dataclass fields (a pair: the
    class and the names that a command takes from it)."""
    out = {}
    for c in classes:
        cls, names = c if isinstance(c, tuple) else (c, None)
        out.update({f.name: f.metadata["option"] for f in dataclasses.fields(cls)
                    if "option" in f.metadata and (names is None or f.name in names)})
    return out


def click_command(name: str) -> click.Command:
    cmd = typer.main.get_command(app)
    for word in name.split():
        cmd = cmd.commands[word]
    return cmd


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_command_line_is_the_declaration(name):
    decl = declared_options(COMMANDS[name])
    params = {p.name: p for p in click_command(name).params if p.name != "help"}
    assert set(params) == set(decl)
    for field_name, o in decl.items():
        p = params[field_name]
        flag = o.flag or "--" + field_name.replace("_", "-")
        assert p.opts == [flag], field_name
        assert p.hidden == o.hidden and p.required == o.required, field_name
        assert (p.help or "").startswith(o.help), field_name
        assert p.rich_help_panel == o.panel, field_name
        assert p.multiple == (o.spelling == "repeat"), field_name
        assert p.is_flag == (o.spelling in ("switch", "flag")), field_name
        assert p.secondary_opts == (["--no-" + flag[2:]] if o.spelling == "switch" else []), \
            field_name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_lists_every_declared_option_in_its_group(name):
    r = CliRunner().invoke(app, [*name.split(), "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    decl = declared_options(COMMANDS[name])
    for field_name, o in decl.items():
        flag = o.flag or "--" + field_name.replace("_", "-")
        assert (f"{flag} " in r.output) != o.hidden, flag
    for panel in {o.panel for o in decl.values() if not o.hidden}:
        assert f"─ {panel} ─" in r.output


# ------------------------------------------------------------------ config -> args -> config
def stop(seen):
    def run(cfg, *a, **k):
        seen.append(cfg)
        raise UsageError("stop here")
    return run


def random_effectiveness(rng: random.Random, tmp) -> EffectivenessConfig:
    datasets = rng.sample(["dl19", "dl20", "scifact", "nfcorpus"], rng.randint(1, 3))
    over = {d: rng.choice(["run:a=b.trec", "bm25", "run:{dataset}.trec"])
            for d in datasets if rng.random() < 0.4}
    docs_over = {d: f"{d}.jsonl" for d in datasets if rng.random() < 0.3}
    models = [rng.choice([ModelRef("minilm-l6", "s1"), ModelRef("org/m"),
                          ModelRef("org/m", "lab")]) for _ in range(rng.randint(0, 2))]
    return EffectivenessConfig(
        datasets=datasets, models=models,
        variants=rng.sample(["bm25", "ce", "colbert[proj=0,qaug=0]", "mice-l4+2", "mask1"],
                            rng.randint(1, 4)),
        first_stage=rng.choice(["bm25", "run:x.trec"]), first_stage_for=over,
        docs=rng.choice([None, "d.jsonl"]), docs_for=docs_over,
        depth=rng.choice([100, 20, 7]), limit_queries=rng.choice([None, 3]),
        measures=rng.choice([["nDCG@10", "RR@10", "R@100"], ["nDCG@10"],
                             ["P(rel=2,judged_only=True)@5", "RR@10"]]),
        baseline=rng.choice([None, "bm25"]), test=rng.choice(["ttest", "randomization"]),
        correction=rng.choice(["holm", "bonferroni", "none"]), seed=rng.randint(0, 9),
        batch_size=rng.choice([32, 8]), doc_batch_size=rng.choice([64, 16]),
        dtype=rng.choice(["fp32", "bf16"]), device=rng.choice(["cpu", "auto"]),
        executor=rng.choice(["auto", "fast", "reference"]),
        query_max_tokens=rng.choice([None, 16]), doc_max_tokens=rng.choice([None, 64]),
        output_dir=str(tmp / rng.choice(["o", "p"])),
        cache_dir=rng.choice([None, str(tmp / "c")]), summary_name=rng.choice(["summary", "s2"]),
        doc_store=rng.choice(["fp16", "int8", "fp32"]), gzip_runs=rng.random() < 0.5,
        local_attention=rng.choice(["window", "global"]), runtime=rng.choice(["torch", "ort"]))


@pytest.mark.parametrize("seed", range(6))
def test_effectiveness_config_round_trips_through_its_command_line(seed, tmp_path, monkeypatch):
    from mice_bench.effectiveness import runner

    cfg = random_effectiveness(random.Random(seed), tmp_path)
    seen: list = []
    monkeypatch.setattr(runner, "run_effectiveness", stop(seen))
    args = to_args(cfg, "effectiveness")
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and seen, (args, r.output)
    assert seen[0] == cfg, args


def random_latency(rng: random.Random, tmp) -> LatencyConfig:
    maybe = lambda v: v if rng.random() < 0.5 else None  # noqa: E731
    protocol = rng.choice(["rerank", "paper"])
    return LatencyConfig(
        model=rng.choice(["minilm-l12", "minilm-l6"]),
        variants=rng.sample(["ce", "mice-l4+2", "colbert[proj=0,qaug=0]", "mask1"],
                            rng.randint(1, 3)),
        protocol=protocol, batch_sizes=maybe(rng.sample([1, 4, 16], rng.randint(1, 2))),
        query_tokens=maybe(8) if protocol == "rerank" else None,
        doc_tokens=maybe([32, 64][: rng.randint(1, 2)]),
        depth=maybe(4) if protocol == "rerank" else None,
        precompute=rng.choice([None, True, False]), kv_cache=False,
        doc_vectors=rng.random() < 0.5, doc_store=None, dtype=rng.choice(["fp32", "bf16"]),
        device=rng.choice(["cpu", "auto"]), compile=rng.random() < 0.3,
        warmup=maybe(0), runs=maybe(2), min_seconds=maybe(0.5), threads=maybe(2),
        executor=rng.choice(["auto", "reference"]), schedule=rng.choice(["interleaved",
                                                                          "sequential"]),
        peers=rng.choice([[], ["hf"], ["hf", "st"]]),
        output=str(tmp / "l.json"), format=rng.choice(["table", "json"]))


@pytest.mark.parametrize("seed", range(6))
def test_latency_config_round_trips_through_its_command_line(seed, tmp_path, monkeypatch):
    from mice_bench.latency import runner

    cfg = random_latency(random.Random(seed), tmp_path)
    seen: list = []
    monkeypatch.setattr(runner, "run_latency", stop(seen))
    args = to_args(cfg, "latency") + ["--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and seen, (args, r.output)
    assert seen[0] == cfg, args


def random_train(rng: random.Random, tmp) -> TrainConfig:
    loss = rng.choice(["lce", "bce", "marginmse"])
    return TrainConfig(
        model=rng.choice(["minilm-l6", "minilm-l12"]), variant=rng.choice([None, "mice-l4+2"]),
        data="beir/scifact/train", output=str(tmp / "out"),
        first_stage=rng.choice(["bm25", "run:r.trec"]), docs=rng.choice([None, "d.jsonl"]),
        negatives_depth=rng.choice([100, 20]), limit_queries=rng.choice([None, 5]),
        val_queries=rng.choice([50, 0]), val_depth=rng.choice([100, 10]),
        val_every=rng.choice([0, 5]), val_metric=rng.choice(["nDCG@10", "RR@10"]), loss=loss,
        teacher="minilm-l6" if loss == "marginmse" else None,
        group_size=2 if loss == "marginmse" else rng.choice([None, 4]),
        steps=rng.choice([1000, 7]), batch_size=rng.choice([32, 8]), grad_accum=rng.choice([1, 2]),
        lr=rng.choice([2e-5, 1e-4]), warmup=rng.choice([None, 3]),
        schedule=rng.choice(["linear", "constant"]), weight_decay=rng.choice([0.01, 0.0]),
        adam_eps=rng.choice([1e-8, 1e-6]), grad_clip=rng.choice([1.0, 0.0]),
        dropout=rng.random() < 0.5, seed=rng.randint(0, 5), precision=rng.choice(
            ["auto", "fp32", "bf16"]), device=rng.choice(["auto", "cpu"]),
        executor=rng.choice(["auto", "reference"]), query_max_tokens=rng.choice([32, 16]),
        doc_max_tokens=rng.choice([None, 64]), eval_batch_size=rng.choice([64, 8]),
        checkpoint_every=rng.choice([0, 10]), keep_checkpoints=rng.choice([2, 1]),
        resume=rng.random() < 0.3, log_dir=str(tmp / "logs"),
        cache_dir=rng.choice([None, str(tmp / "c")]), progress=rng.random() < 0.5)


@pytest.mark.parametrize("seed", range(6))
def test_train_config_round_trips_through_its_command_line(seed, tmp_path, monkeypatch):
    from mice_bench.training import loop

    cfg = random_train(random.Random(seed), tmp_path)
    seen: list = []
    monkeypatch.setattr(loop, "preflight", stop(seen))
    args = to_args(cfg, "train")
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and seen, (args, r.output)
    assert seen[0] == cfg, args


# ------------------------------------------------------------------ study files
def _study(tmp_path, text):
    p = tmp_path / "s.toml"
    p.write_text('name = "s"\nvariants = ["bm25", "ce"]\n' + text)
    return p


def test_a_study_table_takes_every_option_a_study_may_set(tmp_path):
    """An option declared on the config is a study key with no other edit: the study's value
    reaches the task's config and the command line that --dry-run prints."""
    from mice_bench.ablations.runner import plan_study
    from mice_bench.study import load_study

    st = load_study(_study(tmp_path, '[effectiveness]\nmodels = ["tests/tiny-ce"]\n'
                                     'datasets = ["scifact"]\ndoc_store = "int8"\n'
                                     'gzip_runs = false\nlimit_queries = 3\n'
                                     '[[latency]]\nname = "a"\nmodel = "minilm-l6"\n'
                                     'doc_vectors = false\nbatch_size = [2, 4]\n'))
    lat, eff = plan_study(st, tmp_path / "results")
    assert eff.config.doc_store == "int8" and eff.config.gzip_runs is False
    a = eff.args
    assert a[a.index("--doc-store") + 1] == "int8" and "--no-gzip-runs" in a
    assert lat.config.doc_vectors is False and lat.config.batch_sizes == [2, 4]
    assert "--no-doc-vectors" in lat.args and lat.args[lat.args.index("--batch-size") + 1] \
        == "2,4"


@pytest.mark.parametrize("table,key,valid", [
    ('[effectiveness]\nmodels = ["m"]\ndatasets = ["scifact"]\noutput_dir = "x"\n',
     "effectiveness.output_dir", "doc_store"),
    ('[[latency]]\nname = "a"\nformat = "json"\n', "latency[0].format", "doc_vectors"),
])
def test_a_study_key_that_is_no_option_exits_2_naming_the_valid_keys(tmp_path, table, key,
                                                                     valid):
    r = CliRunner().invoke(app, ["run", str(_study(tmp_path, table)), "--dry-run",
                                 "--results", str(tmp_path / "res")])
    assert r.exit_code == 2, r.output
    line = " ".join(r.output.split())
    assert f"unknown key '{key}'" in line and valid in line
    assert not (tmp_path / "res").exists()
