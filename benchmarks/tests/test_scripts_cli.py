"""Scripts refuse bad options with a usage message (exit code 2) before any work, never a traceback."""
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
# Small enough that a script which did not refuse would still end soon (and the test fail, not hang).
TINY = ["--img-size", "64", "--set", "dim=16", "--set", "num_experts=2", "--set", "top_k=1",
        "--set", "pretrained=false"]


def _run_all(*commands):
    """Run each ``[script, *args]`` as a fresh process, all at once (each one's imports take seconds)."""
    procs = [subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for script, *args in commands]
    results = []
    for proc in procs:
        try:
            output, _ = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        results.append((proc.returncode, output))
    return results


def _assert_usage_errors(commands, results):
    for (script, *args), (code, output) in zip(commands, results):
        assert code == 2 and "Traceback" not in output, (script, args, code, output[-2000:])


def test_benchmark_predict_refuses_bad_options_up_front(tmp_path):
    tiny = [*TINY, "--num-images", "1", "--image-px", "64", "--repeats", "1", "--latency-iters", "1",
            "--no-fresh-process", "--device", "cpu"]
    cases = {  # args -> a phrase of the message
        ("--device", "nonsense"): "not a device",
        ("--set", "backbone"): "section.key=value",
        ("--batch-size", "0"): "not in the range",
        ("--img-size", "50"): "multiple of 32",
        ("--checkpoint", str(tmp_path / "missing.pt")): "does not exist",
        # Found before the run, not after it (the run's result would be lost).
        (*tiny, "--json", str(tmp_path / "file.txt" / "bench.json")): "cannot write",
    }
    (tmp_path / "file.txt").write_text("a file, not a folder")
    commands = [("benchmark_predict.py", *args) for args in cases]
    results = _run_all(*commands)
    _assert_usage_errors(commands, results)
    for phrase, (_, output) in zip(cases.values(), results):
        assert phrase in output.lower(), (phrase, output)


def test_check_cuda_graph_needs_a_gpu_and_profile_step_refuses_a_bad_set():
    commands = [("check_cuda_graph.py", "--device", "cpu", *TINY, "--images", "2", "--batch-size", "2"),
                ("profile_step.py", "--set", "dim", "--device", "cpu", "--batch-size", "1", "--img-size", "64")]
    if not torch.cuda.is_available():  # the default --device cuda
        commands.append(("check_cuda_graph.py", *TINY, "--images", "2", "--batch-size", "2"))
    results = _run_all(*commands)
    _assert_usage_errors(commands, results)
    assert "needs a GPU" in results[0][1] and "section.key=value" in results[1][1]
    if len(results) > 2:
        assert "CUDA is not available" in results[2][1]
