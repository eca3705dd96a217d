"""The benchmark's accounting and a tiny run of `make bench` (no timing is asserted)."""

import json
import os
import sys

import pytest
import torch

from fused_rmsprop import FusedRMSprop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import cases  # noqa: E402
import harness  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402


@pytest.mark.parametrize("dtype, config, expected", [
    # read p, g, v and write p, v: 5 accesses; + 4 for momentum and centered state
    (torch.float32, "plain", 20),
    (torch.float32, "mom+ctr+wd", 36),
    (torch.bfloat16, "plain", 10),
    (torch.bfloat16, "mom+ctr+wd", 18),
    (torch.float64, "plain", 40),
])
def test_bytes_per_element_is_the_minimum_traffic(dtype, config, expected):
    assert cases.bytes_per_element(dtype, config) == expected


def test_bytes_per_element_counts_every_tensor_the_op_touches():
    # From the op's own arguments: params and grads are read, params and each
    # state list are read and written.
    for config, options in cases.CONFIGS.items():
        p = torch.zeros(4, requires_grad=True)
        p.grad = torch.ones(4)
        opt = FusedRMSprop([p], **options)
        opt.step()
        call, = opt._gather_calls({})
        args = call.args
        params, grads, square_avgs, buffers, grad_avgs, _ = args
        state_lists = sum(1 for lst in (square_avgs, buffers, grad_avgs) if lst)
        assert cases.bytes_per_element(torch.float32, config) == 4 * (3 + 2 * state_lists)


def test_model_shapes_have_their_published_sizes():
    assert cases.numel(cases.gpt2_small_shapes()) == 124_439_808
    assert len(cases.gpt2_small_shapes()) == 148
    assert cases.numel(cases.resnet50_shapes()) == 25_557_032
    assert len(cases.resnet50_shapes()) == 161
    assert cases.numel(cases.many_tiny_shapes()) == 200 * 16


def test_paired_ratio_cancels_a_common_drift():
    # Both kinds slow down together by up to 3x; the ratio within a repeat is 2.
    drift = [1.0, 3.0, 1.5, 2.5, 1.2]
    slow = [2.0 * d for d in drift]
    assert harness.paired(slow, drift) == pytest.approx(2.0)


def test_a_tiny_benchmark_run_writes_its_table_json_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert run.main(["--device", "cpu", "--sizes", "1000", "20000", "--models",
                     "--dtypes", "float32", "bfloat16", "--compile", "none",
                     "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "vs foreach" in out and "results written to" in out
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["devices"]["cpu"]["rows"]
    assert len(rows) == 2 * 2 * 2  # sizes x dtypes x configs
    for row in rows:
        assert row["fused_s"] > 0 and row["gbps"] > 0 and row["roofline_pct"] > 0
        assert row["for-loop_speedup"] > 0 and row["foreach_speedup"] > 0
        assert row["bytes_per_element"] == cases.bytes_per_element(
            getattr(torch, row["dtype"]), row["config"])
    assert (tmp_path / "throughput_cpu.png").stat().st_size > 10_000
    table = report.markdown_table(rows).splitlines()
    assert len(table) == 2 + len(rows) and table[2].startswith("| 1e+03 | 1 | float32 | plain |")


def test_the_headline_case_gets_the_compile_baseline():
    args = run.parse_args([])
    names = {name for name, _, dtype, _ in run.case_list(args) if run.wants_compile(args, name, dtype)}
    assert names == {"6.4e+07"}


def test_the_isa_comparison_runs_every_copy_and_leaves_the_choice_automatic(capsys):
    import isa

    rows = isa.main(["--size", "5000", "--repeats", "2", "--dtypes", "float32", "float16"])
    assert len(rows) == 2 * len(cases.CONFIGS)
    copies = isa.runnable()
    for _, _, ms, ratios in rows:
        assert len(ms) == len(copies) and all(m > 0 for m in ms)
        assert len(ratios) == len(copies) - 1 and all(r > 0 for r in ratios)
    assert torch.ops.fused_rmsprop._cpu_isa() == copies[0]
    assert "| float16 | plain |" in capsys.readouterr().out
