"""Names that become paths stay inside the results folder, and output paths are checked
before any work: study and workload names with ``../``, ``variants show --png`` to a
read-only folder, under a file or with an extension matplotlib cannot write, ``report --out``
read-only or under a file."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mice_bench.cli import app
from mice_bench.study import StudyError, load_study

from test_reliability import assert_usage_error


def study(tmp_path: Path, name: str = "ok", workload: str = "w", size: str | None = None
          ) -> Path:
    p = tmp_path / "s.toml"
    text = (f'name = "{name}"\nvariants = ["ce"]\n'
            f'[[latency]]\nname = "{workload}"\nmodel = "minilm-l6"\n')
    if size is not None:
        text += f'[sizes."{size}"]\ndescription = "x"\n'
    p.write_text(text)
    return p


@pytest.mark.parametrize("kw,key", [
    (dict(name="../../escape"), "'name'"),
    (dict(name="a/b"), "'name'"),
    (dict(name=".hidden"), "'name'"),
    (dict(workload="../x"), "'latency[0].name'"),
    (dict(workload=".."), "'latency[0].name'"),
    (dict(workload="a\\\\b"), "'latency[0].name'"),
    (dict(size="../up"), "'sizes.../up'"),
])
def test_names_that_would_leave_the_results_folder_are_refused(tmp_path, kw, key):
    p = study(tmp_path, **kw)
    with pytest.raises(StudyError, match="no folders"):
        load_study(p)
    for extra in (["--dry-run"], []):
        r = CliRunner().invoke(app, ["run", str(p), "--results", str(tmp_path / "res"),
                                     *extra])
        assert_usage_error(r, key)
    assert not (tmp_path / "res").exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s.toml"]


def test_plain_names_plan_files_inside_the_results_folder(tmp_path):
    from mice_bench.ablations.runner import plan_study

    st = load_study(study(tmp_path, name="rerank-cpu", workload="depth_8+x"))
    (task,) = plan_study(st, tmp_path / "res")
    out = Path(task.output).resolve()
    assert out.parent == (tmp_path / "res" / "latency").resolve()
    assert out.name == "rerank-cpu-depth_8+x.json"


def test_default_study_name_from_an_odd_file_name_is_a_safe_slug(tmp_path):
    p = tmp_path / "my study (v2).toml"
    p.write_text('variants = ["ce"]\n[[latency]]\nname = "w"\nmodel = "minilm-l6"\n')
    name = load_study(p).name
    assert "/" not in name and " " not in name and name


# --------------------------------------------------------------------------- figures
@pytest.fixture
def read_only(monkeypatch):
    """Folders named ``ro`` refuse new files (as a read-only folder does for a normal user;
    tests may run as root, who could write there)."""
    real = tempfile.NamedTemporaryFile

    def guarded(*a, dir=None, **kw):
        if dir is not None and Path(dir).name == "ro":
            raise PermissionError(13, "Permission denied")
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", guarded)


def test_png_to_a_read_only_folder_is_refused_before_work(tmp_path, read_only):
    (tmp_path / "ro").mkdir()
    r = CliRunner().invoke(app, ["variants", "show", "mice-l4+3", "--png",
                                 str(tmp_path / "ro" / "m.png")])
    msg = assert_usage_error(r, "--png", "not writable")
    assert "layers" not in r.output.split("error:")[0]       # nothing printed before
    assert "Permission denied" in msg


@pytest.mark.parametrize("rel,needle", [("afile/m.png", "not a folder"),
                                        ("m.docx", "matplotlib cannot write '.docx'")])
def test_png_paths_that_cannot_be_written(tmp_path, rel, needle):
    (tmp_path / "afile").write_text("x")
    r = CliRunner().invoke(app, ["variants", "show", "mice-l4+3", "--png",
                                 str(tmp_path / rel)])
    msg = assert_usage_error(r, "--png", needle)
    if "docx" in rel:
        assert "png" in msg and "pdf" in msg           # the valid extensions are listed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_png_in_a_writable_folder_is_written(tmp_path):
    r = CliRunner().invoke(app, ["variants", "show", "mice-l4+3", "--png",
                                 str(tmp_path / "f" / "m.svg")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "f" / "m.svg").read_text().lstrip().startswith("<?xml")


# --------------------------------------------------------------------------- report
def _results(tmp_path: Path) -> Path:
    d = tmp_path / "results"
    (d / "latency").mkdir(parents=True)
    return d


def test_report_out_under_a_file_or_read_only_is_refused_before_work(tmp_path, read_only,
                                                                     monkeypatch):
    import mice_bench.report.build as build

    monkeypatch.setattr(build, "build_report", lambda *a, **k: pytest.fail("built"))
    res = _results(tmp_path)
    (tmp_path / "afile").write_text("x")
    for out, needle in ((tmp_path / "afile" / "rep", "cannot create"),
                        (tmp_path / "ro", "not writable")):
        if out.name == "ro":
            out.mkdir()
        r = CliRunner().invoke(app, ["report", "--results", str(res), "--out", str(out),
                                     "--ablations", str(tmp_path / "none")])
        assert_usage_error(r, "--out", str(out), needle)
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "tables").write_text("x")                 # a file where a folder goes
    r = CliRunner().invoke(app, ["report", "--results", str(res), "--out", str(rep)])
    assert_usage_error(r, "--out", "tables", "not a folder")


def test_report_names_a_missing_results_folder(tmp_path):
    r = CliRunner().invoke(app, ["report", "--results", str(tmp_path / "nope"), "--out",
                                 str(tmp_path / "rep")])
    assert_usage_error(r, "--results", "no such folder")
    assert not (tmp_path / "rep").exists()
