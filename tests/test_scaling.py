"""dmlkit.scaling: the measuring processes behind benchmarks/large_batch.py and notebook 11
(peak memory of dense vs tiled runs, skipped and failed runs, the table's ratios)."""

import pytest
import torch

from dmlkit import scaling


def test_dense_holds_several_matrices_and_tiles_do_not():
    """The dense multi-similarity loss at B = 2048 holds several (B, B) float32 buffers
    (16 MB each); tiles of 256 (and the tile cache of the 8 MB upper triangle) far less."""
    dense = scaling.run_one("dense", "multi_similarity", 2048, dim=32, repeats=1)
    tiled = scaling.run_one("tiled", "multi_similarity", 2048, dim=32, chunk=256, repeats=1)
    assert dense["error"] == tiled["error"] == ""
    assert dense["peak_mb"] > 3 * 16
    assert tiled["peak_mb"] < dense["peak_mb"] / 2
    assert dense["time_s"] > 0 and tiled["time_s"] > 0
    assert (tiled["B"], tiled["M"], tiled["chunk"], dense["chunk"]) == (2048, 2048, 256, "")


def test_query_vs_reference_rows_name_the_bank():
    row = scaling.run_one("tiled", "angular", 16, M=40, dim=8, chunk=8, repeats=1)
    assert row["error"] == "" and (row["B"], row["M"]) == (16, 40)


def test_skipped_and_impossible_runs_say_why():
    row = scaling.run_one("dense", "multi_similarity", 65536, max_gb=8)
    assert row["error"].startswith("skipped: needs ~86 GB") and row["time_s"] is None
    assert scaling.run_one("pml", "binomial_deviance", 64)["error"] == "no PML equivalent"
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        scaling.run_one("dense", "nope", 64)
    with pytest.raises(ValueError, match="implementation 'fast'"):
        scaling.run_one("fast", "triplet", 64)


def test_auto_is_estimated_as_tiled_beyond_the_budget():
    # "auto" tiles at 65,536, so it is not skipped for the dense path's memory
    assert scaling._auto_tiles("multi_similarity", 65536, 65536)
    assert not scaling._auto_tiles("multi_similarity", 1024, 1024)
    # the angular loss's dense (M, M) buffers count too: a small batch against a large bank
    assert scaling._auto_tiles("angular", 64, 200_000)
    assert not scaling._auto_tiles("multi_similarity", 64, 200_000)


def test_table_ratios():
    base = {"loss": "triplet", "B": 8, "M": 8, "device": "cpu", "error": ""}
    rows = [{**base, "impl": "dense", "time_s": 2.0, "peak_mb": 100.0},
            {**base, "impl": "tiled", "time_s": 1.0, "peak_mb": 10.0},
            {**base, "impl": "pml", "time_s": 15.0, "peak_mb": 400.0},
            {**base, "B": 16, "M": 16, "impl": "dense", "time_s": None, "peak_mb": None,
             "error": "skipped: needs ~9 GB"}]
    table = scaling.format_table(rows).splitlines()
    assert table[2] == ("| triplet | 8 | 8 | 2.00 s / 100 MB | 1.00 s / 10 MB | "
                        "15.00 s / 400 MB | 15.0x | 0.025 | 0.50 |")
    assert table[3] == "| triplet | 16 | 16 | (skipped: needs ~9 GB) | - | - | - | - | - |"


def test_peak_resets_to_the_current_resident_set():
    big = torch.ones(64 * 2 ** 20 // 4)          # 64 MB touched
    del big
    current = scaling.reset_peak_rss()
    assert abs(scaling.peak_rss_kb() - current) < 16 * 1024


def test_a_resident_set_that_shrank_reads_as_no_increase(monkeypatch):
    """The kernel's resident-set counts are approximate: a run that allocates almost nothing
    can end below the resident set read before it. That is reported as 0 MB, not -0.2 MB."""
    monkeypatch.setattr(scaling, "reset_peak_rss", lambda: 10_000)
    monkeypatch.setattr(scaling, "peak_rss_kb", lambda: 10_000 - 232)
    row = scaling.measure("tiled", "triplet", 16, None, 8, 8, 1, "cpu")
    assert row["peak_mb"] == 0.0 and row["time_s"] > 0
    monkeypatch.setattr(scaling, "peak_rss_kb", lambda: 10_000 + 2048)
    assert scaling.measure("tiled", "triplet", 16, None, 8, 8, 1, "cpu")["peak_mb"] == 2.0


def test_csv_has_date_and_machine(tmp_path):
    path = tmp_path / "rows.csv"
    scaling.save_csv([{"loss": "triplet", "impl": "dense", "B": 8, "M": 8, "D": 4,
                       "chunk": "", "device": "cpu", "time_s": 0.5, "peak_mb": 1.0,
                       "error": ""}], str(path))
    head, row = path.read_text().splitlines()
    assert head.startswith("date,machine,loss,impl,B,M") and ",triplet,dense,8,8,4," in row


def test_benchmark_rounds_print_each_rounds_ratio(capsys):
    """benchmarks/large_batch.py --rounds 2: the grid twice, then one PML / tiled ratio per
    round with the median and the minimum."""
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "large_batch.py"
    spec = importlib.util.spec_from_file_location("large_batch", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--sizes", "64", "--dim", "8", "--chunk", "16", "--repeats", "1",
                "--impls", "tiled", "pml", "--rounds", "2", "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.count("| multi_similarity | 64 | 64 |") == 2
    line = next(ln for ln in out.splitlines() if "multi_similarity B=64 M=64:" in ln)
    ratios = line.split(":", 1)[1].split("(")[0].split(",")
    assert len(ratios) == 2 and all(r.strip().endswith("x") for r in ratios)
    assert "median" in line and "min" in line
    with pytest.raises(SystemExit):
        bench.main(["--rounds", "0"])
