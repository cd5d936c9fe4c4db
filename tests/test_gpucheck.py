"""The GPU check (benchmarks/gpu.py, dmlkit.gpucheck) kept from rotting: its smoke run
(``--device cpu --tiny``) end to end, the report it writes, a failing section recorded while
the others run, the time budget, and clear errors for bad options."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dmlkit import gpucheck, losses
from dmlkit.gpucheck import correctness, large_batches, notebook09, report

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """``python benchmarks/gpu.py --device cpu --tiny`` in a subprocess: (exit code, report)."""
    out = tmp_path_factory.mktemp("gpu")
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--device", "cpu",
                          "--tiny", "--out", str(out)], capture_output=True, text=True,
                         timeout=600, cwd=REPO)
    assert (out / "report.json").exists(), run.stdout[-3000:] + run.stderr[-3000:]
    rep = json.loads((out / "report.json").read_text())
    return run, rep, out


def _section(rep, name):
    return next(s for s in rep["sections"] if s["name"] == name)


@pytest.mark.slow
def test_smoke_run_passes_and_reports_every_section(smoke):
    run, rep, out = smoke
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert [s["name"] for s in rep["sections"]] == list(gpucheck.SECTIONS)
    assert rep["summary"]["verdict"] == "PASS" and rep["summary"]["checks_failed"] == 0
    assert rep["summary"]["sections_failed"] == []
    assert rep["settings"] == {"device": "cpu", "tiny": True, "budget_s": 480.0,
                               "out": str(out), "sections": list(gpucheck.SECTIONS)}
    assert rep["meta"]["torch"] == torch.__version__
    # every check with a tolerance lies within it; progress was printed as it went
    for sec in rep["sections"]:
        for c in sec["checks"]:
            if isinstance(c["tol"], float):
                assert c["value"] <= c["tol"], (sec["name"], c)
    assert "[" in run.stdout and "Correctness on the device: ok" in run.stdout
    md = (out / "report.md").read_text()
    assert md.startswith("# dmlkit GPU check") and "**PASS**" in md
    assert md.count("skipped: no CUDA") >= 4


@pytest.mark.slow
def test_smoke_correctness_covers_every_loss(smoke):
    _, rep, _ = smoke
    sec = _section(rep, "correctness")
    assert sec["status"] == "ok"
    rows = sec["tables"]["losses (max-norm relative errors)"]
    assert [r["loss"] for r in rows] == losses.available()
    for r in rows:
        assert r["finite"] and r["bf16 finite"] and r["fp16 finite"], r
        if r["loss"] not in correctness.STOCHASTIC:
            assert r["fp32 vs fp64 value"] < correctness.FP32_TOL
            # the loss alone under autocast is its float32 self (dmlkit.precision)
            for amp in ("bf16", "fp16"):
                assert r[f"{amp} value"] <= correctness.AMP_TOL[amp][0] == 1e-5, (amp, r)
                assert r[f"{amp} grad"] <= correctness.AMP_TOL[amp][1] == 1e-5, (amp, r)
    tiled = [r for r in rows if r["tiled vs dense"] is not None]
    assert len(tiled) >= 15 and max(r["tiled vs dense"] for r in tiled) < 1e-5
    checks = {c["name"]: c for c in sec["checks"]}
    assert checks["CUDA vs CPU, float32, every loss"]["result"] == "skipped: no CUDA"
    ev = checks["evaluate on cpu tensors == CPU: retrieval metrics"]
    assert ev["passed"] and ev["value"] == 0.0


@pytest.mark.slow
def test_smoke_training_batches_notebook_and_processes(smoke):
    _, rep, _ = smoke
    train = _section(rep, "training")
    assert train["status"] == "ok"
    speed = train["tables"]["images per second (fit vs the bare loop)"]
    assert len(speed) == 2 and all(r["fit images/s"] > 0 and r["bare images/s"] > 0
                                   for r in speed)
    checks = {c["name"]: c for c in train["checks"]}
    resume = checks["checkpoint written on cpu and resumed: next-step loss equal"]
    assert resume["passed"] and resume["value"] == 0.0       # exact on the CPU
    goals = [c for c in train["checks"] if "bare loop" in c["name"]]
    assert len(goals) == 2 and all(c["result"].startswith("skipped: no CUDA") for c in goals)

    big = _section(rep, "large_batches")
    rows = next(iter(big["tables"].values()))
    assert [(r["loss"], str(r["B"]).split()[0]) for r in rows] == [
        (loss, b) for loss in large_batches.LOSSES for b in ("64", "128", "256")]
    assert all(r["tiled s"] > 0 and r["PML s"] > 0 and r["error"] is None for r in rows)

    nb = _section(rep, "notebook")
    assert nb["status"] == "skipped" and nb["reason"].startswith("no CUDA")
    assert [c["passed"] for c in nb["checks"]] == [True, True]    # parameters, the call

    several = _section(rep, "several_gpus")
    assert several["status"] == "ok"
    assert all(c["passed"] and c["value"] <= 1e-10 for c in several["checks"])
    assert [c["name"].split()[0] for c in several["checks"]] == ["gloo", "gloo"]


def test_a_failing_section_is_recorded_and_the_rest_run(tmp_path, monkeypatch):
    def boom(ctx, sec):
        sec.check("a value", 0.5, 1.0)
        raise RuntimeError("something broke\nsecond line")

    def fine(ctx, sec):
        sec.check("another value", 2.0, 1.0)            # a failed check, not an exception

    def skip(ctx, sec):
        raise report.Skip("no CUDA")

    monkeypatch.setattr(gpucheck, "SECTIONS", {"a": ("A", boom, 0), "b": ("B", fine, 0),
                                               "c": ("C", skip, 0)})
    lines = []
    rep = gpucheck.run_check("cpu", tiny=True, out=tmp_path, log=lines.append)
    a, b, c = rep["sections"]
    assert (a["status"], a["reason"]) == ("failed", "RuntimeError: something broke")
    assert "Traceback" not in a["reason"] and "something broke" in a["notes"][0]
    assert a["checks"][0]["passed"] and b["status"] == "ok" and not b["checks"][0]["passed"]
    assert (c["status"], c["reason"]) == ("skipped", "no CUDA")
    assert rep["summary"] == {**rep["summary"], "verdict": "FAIL", "checks_passed": 1,
                              "checks_failed": 1, "sections_failed": ["a"],
                              "sections_skipped": ["c"]}
    assert json.loads((tmp_path / "report.json").read_text())["summary"]["verdict"] == "FAIL"
    md = (tmp_path / "report.md").read_text()
    assert "| C | skipped: no CUDA |" in md and "| A | failed: RuntimeError" in md
    assert any("A: failed" in line for line in lines)


def test_the_budget_skips_sections_that_no_longer_fit(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(gpucheck, "SECTIONS", {
        "quick": ("Quick", lambda ctx, sec: ran.append("quick"), 0),
        "heavy": ("Heavy", lambda ctx, sec: ran.append("heavy"), 60)})
    rep = gpucheck.run_check("cpu", tiny=False, out=tmp_path, budget_s=5, log=lambda m: None)
    quick, heavy = rep["sections"]
    assert ran == ["quick"] and quick["status"] == "ok" and heavy["status"] == "skipped"
    assert heavy["reason"].startswith("time budget:") and "Heavy needs ~60 s" in heavy["reason"]
    with pytest.raises(report.Skip, match="needs ~10 s"):
        report.Budget(1.0).need(10, "x")


def test_bad_options_fail_clearly(tmp_path, capsys):
    for argv, message in [(["--budget-s", "0"], "budget_s must be > 0"),
                          (["--device", "mps"], "device must be cuda, cuda:N or cpu"),
                          (["--device", "gpu"], "device must be cuda, cuda:N or cpu"),
                          (["--only", "nothing"], "invalid choice: 'nothing'")]:
        with pytest.raises(SystemExit) as err:
            gpucheck.main([*argv, "--out", str(tmp_path)])
        assert err.value.code == 2 and message in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            gpucheck.main(["--out", str(tmp_path)])
        assert "--device cpu --tiny" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown section"):
        gpucheck.run_check("cpu", tiny=True, out=tmp_path, only=["nothing"])


def test_pieces():
    assert large_batches.largest_pml_batch("multi_similarity", 80e9) == 30720
    assert large_batches.largest_pml_batch("triplet", 1e6, multiple=64) == 64   # at least one
    assert large_batches.classify_error("RuntimeError: CUDA out of memory.").startswith("OOM")
    assert large_batches.classify_error("ValueError: bad") == "ValueError: bad"
    assert {"DEVICE", "DATASET", "UMAP_POINTS", "RESULTS_CSV"} <= notebook09.declared_parameters(
        REPO / "notebooks" / f"{notebook09.NAME}.py")
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0])
    assert correctness.rel_err(a, b) == 0.5
    assert correctness.rel_err([a, 2 * b], [b, b]) == 1.0   # the worst of several tensors
    sec = report.Section("s", "S")
    assert sec.check("ratio", 0.95, 0.9, at_least=True) and not sec.check("nan", float("nan"), 1)
    assert sec.checks[0]["tol"] == ">= 0.9" and sec.failed_checks == [sec.checks[1]]


def test_the_loader_asks_for_no_more_workers_than_usable_cpus(monkeypatch):
    """PyTorch warns when a loader has more workers than the CPUs this process may use: the
    check's ResNet-50 loader and the training defaults count the usable ones."""
    import os

    from dmlkit.gpucheck import throughput
    from dmlkit.train import datasets

    in_memory = throughput.synthetic_images(2, 2, 8)
    for usable, want in (({0, 1}, 2), (set(range(16)), 4), ({3}, 1)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, u=usable: u)
        assert throughput.loader_workers() == want
        # fit's and extract_features' default for data read from disk: min(8, usable CPUs)
        assert datasets.num_workers(None, object()) == min(8, len(usable))
        assert datasets.num_workers(3, object()) == 3
        assert datasets.num_workers(None, in_memory) == 0


def test_gpu_wheels_pin_what_the_check_imports_and_nothing_preinstalled():
    lines = [ln.split("#")[0].strip()
             for ln in (REPO / "benchmarks" / "gpu-wheels.txt").read_text().splitlines()]
    pins = dict(ln.split("==") for ln in lines if ln)
    assert all(v and v[0].isdigit() for v in pins.values())
    assert {"pytorch-metric-learning", *notebook09.NEEDS} <= set(pins)
    preinstalled = {"torch", "torchvision", "numpy", "scikit-learn", "pandas", "matplotlib",
                    "seaborn", "scipy", "tqdm", "pillow", "packaging", "typing-extensions"}
    assert not preinstalled & set(pins) and not {"umap-learn", "faiss-cpu", "aiohttp"} & set(pins)
    make = (REPO / "Makefile").read_text()
    assert "gpu-wheels:" in make and "-r benchmarks/gpu-wheels.txt" in make
    assert "--no-deps --only-binary=:all:" in make and "GPU_PYTHON   ?= 3.12" in make
    assert "/.whl/" in (REPO / ".gitignore").read_text().splitlines()


def test_large_batches_report_pml_ooms_and_retry_the_largest_size(monkeypatch, tmp_path):
    """PML out of memory at the fixed sizes: reported per row, not raised; at "the largest
    B that fits" one retry at 4/5 of it; the ratio where both ran."""
    calls = []

    def fake(ctx, impl, loss, B, dim, chunk, repeats):
        calls.append((impl, loss, B))
        oom = impl == "pml" and B in (16384, 65536, 30720, 12288)     # fits after a retry
        return {"impl": impl, "B": B, "time_s": None if oom else 2.0 if impl == "pml" else 0.5,
                "peak_mb": None if oom else 100.0,
                "error": large_batches.classify_error(
                    "torch.OutOfMemoryError: CUDA out of memory." if oom else "")}

    monkeypatch.setattr(large_batches, "_measure", fake)
    monkeypatch.setattr(large_batches, "_free_bytes", lambda device: 80e9)
    ctx = gpucheck.Context(device=torch.device("cpu"), tiny=False, out=tmp_path,
                           budget=report.Budget(600), log=lambda m: None)
    sec = report.Section("large_batches", "L")
    large_batches.run(ctx, sec)
    rows = next(iter(sec.tables.values()))
    assert [(r["loss"], r["B"]) for r in rows] == [
        ("multi_similarity", "16384"), ("multi_similarity", "65536"),
        ("multi_similarity", "24576 (largest for PML, after an OOM at 30720)"),
        ("triplet", "16384"), ("triplet", "65536"),
        ("triplet", "9216 (largest for PML, after an OOM at 12288)")]
    assert all(r["error"].startswith("pml: OOM: torch.OutOfMemoryError") for r in rows[:2])
    assert rows[2]["error"] is None and rows[2]["PML / tiled time"] == 4.0
    assert rows[0]["PML / tiled time"] is None and rows[0]["tiled s"] == 0.5
    assert ("tiled", "triplet", 9216) in calls and ("tiled", "triplet", 12288) not in calls
    assert [c["passed"] for c in sec.checks] == [True, True]


def _offline_commands(text: str) -> list[str]:
    """The commands of the first bash block that runs make gpu-wheels, comments stripped."""
    block = next(b for b in text.split("```bash")[1:] if "make gpu-wheels" in b)
    lines = [ln.split("#")[0].strip() for ln in block.split("```")[0].splitlines()]
    return [ln for ln in lines if ln]


def test_the_readme_and_the_gpu_page_give_the_same_offline_commands():
    """The README's five lines (how to run the check on an offline GPU machine) are those of
    docs/gpu.md, and they install into, and import from, the same folder."""
    readme = _offline_commands((REPO / "README.md").read_text())
    page = _offline_commands((REPO / "docs" / "gpu.md").read_text())
    assert readme == page
    assert readme[0] == "make gpu-wheels" and readme[-1] == "cat build/gpu/report.md"
    install = next(c for c in readme if c.startswith("python -m pip install"))
    site = install.split("--target ")[1].split()[0]
    assert "--no-deps" in install and "--no-index" in install and ".whl/*.whl" in install
    run = next(c for c in readme if "benchmarks/gpu.py" in c)
    assert run.startswith(f"PYTHONPATH={site}:. python benchmarks/gpu.py --out build/gpu")
    assert f"/{site}/" in (REPO / ".gitignore").read_text().splitlines()
