"""The benchmark's accounting and a tiny run of `make bench` (no timing is asserted)."""

import json
import os
import sys

import pytest
import torch

from fused_rmsprop import FusedRMSprop
from fused_rmsprop._calls import build_calls

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
        call, = build_calls(opt, set(), set()).calls
        lists = call.lists
        square_avgs, buffers, grad_avgs = (lists[k] for k in ("square_avgs", "momentum_buffers",
                                                              "grad_avgs"))
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
                     "--clipping-size", "20000", "--rounding-size", "30000",
                     "--state-bits-size", "40000", "--release-model", "200x16",
                     "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "vs foreach" in out and "results written to" in out
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["devices"]["cpu"]["rows"]
    assert len(rows) == 2 * 2 * 2  # sizes x dtypes x configs
    clipping = results["devices"]["cpu"]["clipping"]
    assert clipping["numel"] == 20000 and set(clipping["ms"]) == {
        "fused+clip", "compile+clip", "fused+clip+amp", "compile+clip+amp", "norm", "read-probe"}
    assert clipping["speedup"] > 0 and clipping["speedup_amp"] > 0 and clipping["norm_pct"] > 0
    assert "clipped step, 2e+04 float32" in out and "norm pass:" in out
    rounding = results["devices"]["cpu"]["rounding"]
    assert rounding["numel"] == 30000
    for state in ("bfloat16", "float32"):
        assert set(rounding[f"{state} state"]["ms"]) == {"fused", "fused+sr"}
        assert f"3e+04 bfloat16 params, {state} state" in out
    state_bits = results["devices"]["cpu"]["state_bits"]
    assert state_bits["numel"] == 40000
    for config, nbytes in (("plain", 14.0625), ("momentum+centered+wd", 18.1875)):
        r = state_bits[config]
        assert set(r["ms"]) == {"fused8", "compile", "fused"}
        assert r["bytes_per_element"] == nbytes
        assert r["state_bytes_per_element"] == pytest.approx(1 + 4 / 128, rel=1e-3)
        assert r["speedup_vs_compile"] > 0 and r["roofline_pct"] > 0
        assert f"8-bit state, {config}, 4e+04 float32" in out
    release = results["devices"]["cpu"]["release"]
    assert release["model"] == "200x16" and release["tensors"] == 200
    for key in ("ms", "update_ms"):
        assert set(release[key]) == {"step", "release"} and min(release[key].values()) > 0
    assert "gradient release, 200x16 (200 float32 tensors" in out
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


def test_the_gpu_section_plans_its_cases_without_a_gpu():
    # What `make bench` runs on each visible GPU (the timing itself needs one).
    args = run.parse_args([])
    todo = run.case_list(args, "cuda:0")
    sizes = sorted({cases.numel(shapes) for name, shapes, _, _ in todo if len(shapes) == 1})
    assert sizes == [10**6, 10**7, 10**8, 10**9]
    assert {name for name, shapes, _, _ in todo if len(shapes) > 1} == set(cases.MODELS)
    assert {d for _, _, d, _ in todo} == {"float32", "bfloat16"}
    assert {c for _, _, _, c in todo} == set(cases.CONFIGS)
    kinds = {(name, dtype, config): tuple(run.kinds_for(args, name, dtype, "cuda:0"))
             for name, _, dtype, config in todo}
    compiled = {(name, dtype) for (name, dtype, _), k in kinds.items() if "compile" in k}
    assert compiled == {("1e+08", "float32"), ("gpt2-small", "float32")}
    assert all(k[:2] == ("fused", "foreach") and "for-loop" not in k for k in kinds.values())
    # the largest case fits an 80 GB GPU: 1e9 float32 elements with momentum
    # and centered state for three optimizers and the probe
    need = run.bytes_needed([(10**9,)], "float32", "mom+ctr+wd", ["fused", "foreach", "compile"])
    assert 50e9 < need < 0.95 * 79e9
    # --sizes applies to every device; the CPU keeps its own defaults
    assert {n for n, s, _, _ in run.case_list(run.parse_args(["--sizes", "1e3"]), "cuda")
            if len(s) == 1} == {"1e+03"}
    assert {n for n, s, _, _ in run.case_list(args, "cpu") if len(s) == 1} == {
        cases.size_name(x) for x in cases.DEFAULT_SIZES}


def test_probes_measure_bytes_per_element_of_their_operation():
    assert harness.probe_for("cpu")[:2] == ("in-place addcmul_", 16)
    assert harness.probe_for("cuda:0")[:3] == ("device-to-device copy", 8, 2**28)
    assert harness.bandwidth_probe("cpu", numel=2**16, repeats=3) > 0


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


def test_the_in_cache_comparison_reports_every_form_and_copy_on_one_thread(capsys):
    import isa

    threads = torch.get_num_threads()
    result = isa.main(["--in-cache", "--repeats", "1", "--configs", "plain"])
    copies = isa.runnable()
    forms = [form for form, _, _ in isa.IN_CACHE_FORMS]
    assert set(result) == {(form, "plain", copy) for form in forms for copy in copies}
    assert all(torch.isfinite(torch.tensor(ns)) for ns in result.values())
    out = capsys.readouterr().out
    assert "| 8-bit / float32 | SR / nearest |" in out and f"| {copies[-1]} | plain |" in out
    assert torch.get_num_threads() == threads
    assert torch.ops.fused_rmsprop._cpu_isa() == copies[0]


def test_in_cache_op_calls_update_one_tensor_with_two_gradients():
    import isa

    options = {"state_bits": 8, "min_8bit_size": 0, "momentum": 0.9}
    calls = isa.op_calls(300, torch.float32, options)
    assert len(calls) == 2
    (p1,), (p2,) = (c.lists["params"] for c in calls)
    (g1,), (g2,) = (c.lists["grads"] for c in calls)
    assert p1 is p2 and not torch.equal(g1, g2)
    assert "square_avg_scales" in calls[0].options  # the 8-bit form's call
    before = p1.clone()
    calls[1].run()
    assert not torch.equal(p1, before)


def test_checkpoint_memory_phases_run_and_8bit_checkpoints_are_torchs_size(tmp_path):
    # bench/checkpoint_memory.py's phases, in this process and tiny (its
    # numbers are peak resident memory, for the benchmark to report, not to
    # assert); the file: float32 state of the same size whatever the storage
    import checkpoint_memory

    sizes = {}
    for kind in checkpoint_memory.OPTIMIZERS:
        path = str(tmp_path / kind)
        saved = checkpoint_memory._phase(kind, "save", 4 * 4096, path, "torch.save")
        loaded = checkpoint_memory._phase(kind, "load", 4 * 4096, path, "torch.save")
        assert {"state", "save", "file"} <= set(saved) and "load" in loaded
        sizes[kind] = saved["file"]
    assert sizes["fused-8bit"] >= 3 * 4 * 4 * 4096
    assert abs(sizes["fused-8bit"] - sizes["torch"]) < 0.05 * sizes["torch"], sizes
