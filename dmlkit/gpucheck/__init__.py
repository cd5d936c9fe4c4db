"""The GPU check: every CUDA path of dmlkit in one command, with one report.

``python benchmarks/gpu.py`` (or ``python -m dmlkit.gpucheck``) runs, in order, within a
global time budget (``--budget-s``, default 480 s: a section that no longer fits is skipped,
and the report says so):

1. ``correctness`` (:mod:`.correctness`): every registered loss, forward and backward, on the
   device vs the CPU; bf16 / fp16 autocast vs float32; tiled == dense; ``evaluate`` on device
   tensors vs CPU arrays;
2. ``training`` (:mod:`.throughput`): ``fit`` vs a bare PyTorch loop, images per second
   (ResNet-50 at 224 px, small CNN on glyphs); a checkpoint resumed gives the same loss;
3. ``notebook`` (:mod:`.notebook09`): notebook 09 executed on CUDA at a short setting;
4. ``several_gpus`` (:mod:`.several_gpus`): NCCL global-batch loss == one process;
5. ``large_batches`` (:mod:`.large_batches`): tiled multi-similarity and triplet vs
   pytorch-metric-learning at B = 16,384, 65,536 and the largest B that fits, D = 512 (last:
   its measurements stop where the budget ends).

A section that fails is recorded (its error in the report) and the next one runs. The report
(``report.json``, ``report.md``) is rewritten after every section in ``--out`` (default
``build/gpu``). ``--device cpu --tiny`` runs every section at toy size in seconds (the CUDA-only
parts say ``skipped: no CUDA``); ``tests/test_gpucheck.py`` runs it. The exit status is 0 when
no check failed and no section raised.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .report import Budget, Section, Skip, write_report

__all__ = ["SECTIONS", "Context", "absolute_pythonpath", "machine", "main", "run_check"]

REPO = Path(__file__).resolve().parents[2]


def _section(module: str) -> Callable:
    def call(ctx, sec):
        import importlib

        return importlib.import_module(f"{__name__}.{module}").run(ctx, sec)
    return call


#: name -> (title, runner, seconds it needs at the defaults: skipped when fewer are left)
SECTIONS: dict[str, tuple[str, Callable, float]] = {
    "correctness": ("Correctness on the device", _section("correctness"), 10),
    "training": ("Training throughput and checkpoint resumption", _section("throughput"), 60),
    "notebook": ("Notebook 09 on CUDA", _section("notebook09"), 60),
    "several_gpus": ("Several GPUs: NCCL global-batch loss", _section("several_gpus"), 30),
    # last: the open-ended one, its measurements stop where the budget ends
    "large_batches": ("Batches beyond memory: tiled vs pytorch-metric-learning",
                      _section("large_batches"), 90),
}


@dataclass
class Context:
    """What every section gets: the device, the size (``tiny``), the output folder, the time
    budget and the progress printer."""

    device: object
    tiny: bool
    out: Path
    budget: Budget
    log: Callable[[str], None] = print
    repo: Path = field(default=REPO)


def machine(device) -> dict:
    """Date, host, versions, the GPU(s) and the driver, the checkout's commit."""
    import torch

    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "host": platform.node(), "python": platform.python_version(),
            "torch": torch.__version__, "device": str(device)}
    try:
        import torchvision
        meta["torchvision"] = torchvision.__version__
    except ImportError:
        meta["torchvision"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta.update({"gpu": props.name, "gpus visible": torch.cuda.device_count(),
                     "gpu memory GiB": round(props.total_memory / 2**30, 1),
                     "compute capability": f"{props.major}.{props.minor}",
                     "cuda (torch)": torch.version.cuda,
                     "cudnn": torch.backends.cudnn.version(), "driver": _driver()})
    meta["dmlkit commit"] = _git("rev-parse", "--short", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    meta["checkout modified"] = None if status is None else bool(status)
    meta["command"] = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    return meta


def _driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() \
        else None


def _process_age() -> float:
    """Seconds since this process started (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = float(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _git(*args) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def absolute_pythonpath() -> str:
    """Set PYTHONPATH to absolute entries with the repository first (the measuring processes
    and the notebook's kernel run from other folders: ``PYTHONPATH=.gpu-site:.`` would no
    longer find dmlkit there); returns it."""
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    paths = [str(REPO)] + [str(Path(p).resolve()) for p in parts]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return os.environ["PYTHONPATH"]


def run_check(device: str = "cuda", tiny: bool = False, out: str | os.PathLike = "build/gpu",
              budget_s: float = 480.0, only=None, log: Callable[[str], None] | None = None,
              started: float | None = None) -> dict:
    """Run the sections (``only``: some of :data:`SECTIONS`) and write the report into
    ``out``; returns the report (a dict, as ``report.json``). The budget counts from
    ``started`` (a ``time.perf_counter()`` value; default: now)."""
    import torch

    if not budget_s > 0:
        raise ValueError(f"budget_s must be > 0, got {budget_s!r}")
    names = list(SECTIONS) if not only else list(only)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; sections: {', '.join(SECTIONS)}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be cuda, cuda:N or cpu, got {device!r}") from exc
    if dev.type not in ("cuda", "cpu"):
        raise ValueError(f"device must be cuda, cuda:N or cpu, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA is not available here; on a machine without a GPU run "
                         "`python benchmarks/gpu.py --device cpu --tiny` (the smoke run)")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"{device!r}: only {torch.cuda.device_count()} GPU(s) visible")
    if dev.type == "cuda":
        dev = torch.device("cuda", dev.index if dev.index is not None
                           else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    budget = Budget(float(budget_s), start=time.perf_counter() if started is None else started)
    t0 = budget.start

    def say(msg: str) -> None:
        (log or print)(f"[{time.perf_counter() - t0:6.1f} s] {msg}")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    absolute_pythonpath()
    ctx = Context(device=dev, tiny=bool(tiny), out=out.resolve(), budget=budget, log=say)
    meta = machine(dev)
    settings = {"device": str(dev), "tiny": bool(tiny), "budget_s": float(budget_s),
                "out": str(out), "sections": names}
    say(f"GPU check on {meta.get('gpu') or dev}, torch {meta['torch']}, "
        f"{'toy sizes' if tiny else 'full sizes'}, budget {budget_s:.0f} s -> {out}")
    sections: list[Section] = []
    report = {}
    threads = torch.get_num_threads()
    if tiny:                # toy tensors: one thread (several only contend, on a shared host)
        torch.set_num_threads(1)
    try:
        report = _run_sections(ctx, names, sections, meta, settings, say)
    finally:
        torch.set_num_threads(threads)
    say(f"done: {report['summary']['verdict']}, {report['summary']['checks_passed']} checks "
        f"passed, {report['summary']['checks_failed']} failed; {out / 'report.md'}")
    return report


def _run_sections(ctx, names, sections, meta, settings, say) -> dict:
    """Each section in turn, robustly: a Skip or an exception is recorded and the next one
    runs; the report is rewritten after each."""
    import torch

    report = {}
    for name in names:
        title, fn, needs = SECTIONS[name]
        sec = Section(name, title)
        sections.append(sec)
        say(f"{title} ...")
        start = time.perf_counter()
        try:
            if not ctx.tiny:
                ctx.budget.need(needs, title)
            fn(ctx, sec)
        except Skip as exc:
            sec.status, sec.reason = "skipped", str(exc)
        except Exception as exc:                 # recorded; the next section still runs
            sec.status = "failed"
            sec.reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            sec.note("traceback (last lines): " + " / ".join(
                traceback.format_exc().strip().splitlines()[-6:]))
        finally:
            sec.seconds = time.perf_counter() - start
            gc.collect()
            try:
                if ctx.device.type == "cuda":
                    torch.cuda.empty_cache()
            except Exception as exc:   # a broken CUDA context: said, the report still written
                sec.note(f"after the section: {type(exc).__name__}: {exc}"[:300])
        fails = len(sec.failed_checks)
        say(f"{title}: {sec.status}" + (f" ({sec.reason})" if sec.reason else "")
            + (f", {fails} check(s) FAILED" if fails else "") + f" [{sec.seconds:.1f} s]")
        report = write_report(ctx.out, meta, settings, sections, ctx.budget.elapsed())
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/gpu.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--tiny", action="store_true",
                   help="toy sizes: every section in seconds (with --device cpu: the smoke run)")
    p.add_argument("--out", default="build/gpu",
                   help="folder of report.json / report.md (default build/gpu, ignored by git)")
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="global time budget in seconds: later sections that no longer fit "
                        "are skipped (default 480)")
    p.add_argument("--only", nargs="+", choices=list(SECTIONS), default=None,
                   help="run only these sections")
    args = p.parse_args(argv)
    try:
        # the command's budget counts from the start of the process (imports included)
        report = run_check(args.device, args.tiny, args.out, args.budget_s, args.only,
                           started=time.perf_counter() - _process_age())
    except ValueError as exc:
        p.error(str(exc))
    return 0 if report["summary"]["verdict"] == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
