"""The benchmark harness: FLOP counts, one short scratchlm-only run, the report table.

Benchmarks measure and never assert a speed; these tests check only that the
harness runs and reports consistently.
"""

import json

from scratchlm import bench
from scratchlm.cli import main


def test_flops_per_token_is_palm_formula():
    c = dict(vocab_size=100, n_layer=2, n_head=2, n_embd=8, context=16, batch=1)
    n_mm = 2 * 12 * 8 * 8 + 100 * 8
    assert bench.matmul_params(c) == n_mm
    assert bench.flops_per_token(c, 16, training=False) == 2 * n_mm + 4 * 2 * 8 * 16
    assert bench.flops_per_token(c, 16, training=True) == 3 * (2 * n_mm + 4 * 2 * 8 * 16)
    assert bench.matmul_params(c, head=False) == 2 * 12 * 8 * 8      # an encoder, no LM head


def test_one_round_of_tiny_without_torch(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "--configs", "tiny", "--no-bert", "--no-generate", "--no-torch",
                 "--rounds", "1", "--steps", "1", "--warmup", "0", "--quiet",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())["benchmark"]
    assert not (tmp_path / "b.json.partial").exists()
    res = report["configs"]["tiny"]["frameworks"]["scratchlm"]
    for task in ("train", "forward"):
        assert res[task]["tokens_per_s"] > 0 and res[task]["n"] == 1
        assert 0 < res[task]["mfu"] and 0 < res[task]["mfu_own_peak"]
    assert res["peak_mb"] > 0
    assert report["sgemm_peak_gflops"] == max(report["sgemm_peak_runs"]) > 0
    table = capsys.readouterr().out
    assert "tiny" in table and "MFU*" in table and "scratchlm" in table
