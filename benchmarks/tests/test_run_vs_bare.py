"""benchmarks/run_vs_bare.py end to end on the CPU at a tiny size."""
import json
import re
import subprocess
import sys

from _train_helpers import REPO, make_dataset, subprocess_env


def test_run_vs_bare_script_on_cpu(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=16, n_test=4, img_size=64)
    out = tmp_path / "rvb"
    # Relative paths from a folder other than the repository's (the script's children run there).
    cmd = [sys.executable, str(REPO / "benchmarks" / "run_vs_bare.py"), "--dataset-path", "data", "--device", "cpu",
           "--backbone", "edgenext_xx_small", "--img-size", "64", "--batch-size", "4", "--seconds", "14",
           "--num-workers", "1", "--out-dir", "rvb", "--bare-steps", "3", "--benchmark-iters", "2",
           "--set", "model.dim=16", "--set", "eval.batch_size=4", "--set", "data.val_fraction=0.25"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((out / "run_vs_bare.json").read_text())
    run, bare = result["run"], result["bare"]
    assert (out / "train" / "best.pt").is_file() and run["test"]["n"] == 4
    assert 0.0 <= run["test"]["Sm"] <= 1.0 and 0.0 <= bare["Sm"] <= 1.0
    assert bare["steps"] == 3 and bare["train_images"] == 16
    assert result["sm_ratio"] == round(run["test"]["Sm"] / bare["Sm"], 4)
    assert run["images_trained"] == run["summary"]["images_trained"] > 0
    assert run["wall_s_launch_to_exit"] >= run["summary"]["total_s"]
    assert result["benchmark"]["train_img_per_s"] > 0
    assert result["whole_run_vs_benchmark"] == round(run["img_per_wall_s"] / result["benchmark"]["train_img_per_s"], 4)
    assert result["whole_run_vs_bare_step"] == round(run["img_per_wall_s"] / bare["img_per_s"], 4)
    # The last line prints the three recorded ratios.
    printed = [float(x) for x in re.findall(r"\d+\.\d+", proc.stdout.strip().splitlines()[-1])]
    assert all(result[k] in printed for k in ("sm_ratio", "whole_run_vs_benchmark", "whole_run_vs_bare_step"))
