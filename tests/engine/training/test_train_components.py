"""Loss, schedule, EMA, RNG capture and the resumable sampler, on their own."""
import io
import os
import random

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.training.ema import ModelEma
from engine.training.losses import CODLoss, boundary_weight, structure_loss
from engine.training.sampling import ResumableDistributedSampler
from engine.training.schedule import TwoStageSchedule, build_optimizer, param_groups
from engine.training.rng import capture_rng_state, derive_seed, restore_rng_state


def _masks(b=2, size=64):
    m = torch.zeros(b, 1, size, size)
    m[:, :, size // 4: 3 * size // 4, size // 3: 2 * size // 3] = 1.0
    return m


def test_boundary_weight_matches_f3net_definition():
    mask = (torch.rand(2, 1, 48, 64) > 0.6).float()
    reference = 1 + 5 * torch.abs(F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)
    assert torch.allclose(boundary_weight(mask), reference, atol=1e-5)
    assert boundary_weight(torch.zeros(1, 1, 32, 32)).eq(1).all()


def test_structure_loss_matches_sinet_v2_reference():
    mask = _masks()
    logits = torch.randn_like(mask) * 3
    # SINet-V2 / F3Net structure_loss, written out as published
    weit = 1 + 5 * torch.abs(F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)
    wbce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    wbce = (weit * wbce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3))
    pred = torch.sigmoid(logits)
    inter = ((pred * mask) * weit).sum(dim=(2, 3))
    union = ((pred + mask) * weit).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    reference = (wbce + wiou).mean()
    assert torch.allclose(structure_loss(logits, mask), reference, atol=1e-5)


def test_structure_loss_prefers_the_right_answer():
    mask = _masks()
    good = (mask * 2 - 1) * 8  # confident and right
    bad = -good
    assert structure_loss(good, mask) < 0.05 < structure_loss(bad, mask)


def test_cod_loss_terms_and_gradients():
    mask = _masks()
    logits = torch.zeros_like(mask, requires_grad=True)
    sides = [torch.zeros_like(mask, requires_grad=True) for _ in range(3)]
    aux = torch.tensor(1.5, requires_grad=True)
    loss_fn = CODLoss(side_weight=0.5, aux_weight=0.1)
    terms = loss_fn(logits, mask, sides, aux)
    expected = terms["main"] + 0.5 * terms["side"] + 0.1 * 1.5
    assert torch.allclose(terms["loss"], expected)
    terms["loss"].backward()
    assert logits.grad.abs().sum() > 0
    assert all(s.grad.abs().sum() > 0 for s in sides)  # deep supervision reaches every side output
    assert aux.grad.item() == pytest.approx(0.1)
    # no side outputs, no aux loss: just the main term
    only = loss_fn(logits.detach(), mask)
    assert torch.allclose(only["loss"], only["main"])


def test_cod_loss_scores_small_side_maps_against_the_area_averaged_mask():
    mask = _masks(size=64)
    side = torch.randn(2, 1, 16, 16) * 2
    terms = CODLoss(side_weight=1.0, aux_weight=0.0)(torch.zeros_like(mask), mask, [side])
    small = F.avg_pool2d(mask, 4)  # the mask averaged over each 4x4 block
    reference = structure_loss(side, small, kernel=9)  # 31 px at full size is ~8 px here: 9 (odd)
    assert torch.allclose(terms["side"], reference, atol=1e-6)
    # a side map that matches the averaged mask scores better than its opposite
    good = CODLoss()(mask, mask, [(small * 2 - 1) * 8])["side"]
    bad = CODLoss()(mask, mask, [-(small * 2 - 1) * 8])["side"]
    assert good < bad


def test_cod_loss_compiles_as_one_graph_with_the_same_terms():
    # train --compile compiles the loss with the model; the graph must hold the whole loss.
    mask = _masks(size=32)
    logits = torch.randn_like(mask)
    sides = [torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)]
    aux = torch.tensor(1.2)
    loss_fn = CODLoss(side_weight=0.5, aux_weight=0.1)
    want = loss_fn(logits, mask, sides, aux)
    got = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)(logits, mask, sides, aux)
    assert set(got) == set(want)
    for key in want:
        assert torch.allclose(got[key], want[key], atol=1e-6), key


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 1)


def test_param_groups_split_backbone_and_decay():
    groups = {g["name"]: g for g in param_groups(_Tiny(), weight_decay=0.05)}
    assert set(groups) == {"backbone_decay", "backbone_no_decay", "head_decay", "head_no_decay"}
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0  # biases and norm weights
    assert groups["head_decay"]["weight_decay"] == 0.05
    assert groups["backbone_decay"]["is_backbone"] and not groups["head_decay"]["is_backbone"]


def test_two_stage_schedule():
    opt = build_optimizer(_Tiny(), lr=1.0, weight_decay=0.0)
    sched = TwoStageSchedule(opt, base_lr=1.0, total_steps=20, stage1_steps=10, warmup_steps=2,
                             min_lr_ratio=0.0, stage2_lr_scale=0.5, backbone_lr_scale=0.1)
    lr = sched.lr_at
    assert lr(0) == pytest.approx(0.5) and lr(1) == pytest.approx(1.0)  # warmup
    assert lr(0, is_backbone=True) == 0.0  # frozen in stage 1
    assert lr(5) < lr(2) and lr(9) < lr(5)  # cosine decay
    assert lr(10) == pytest.approx(0.25) and lr(11) == pytest.approx(0.5)  # stage 2 warms up to 0.5
    assert lr(11, is_backbone=True) == pytest.approx(0.05)
    assert lr(19) < 0.05
    assert sched.stage(9) == 1 and sched.stage(10) == 2
    for _ in range(12):
        sched.step()
    state = sched.state_dict()
    other = TwoStageSchedule(opt, base_lr=1.0, total_steps=20, stage1_steps=10, warmup_steps=2, min_lr_ratio=0.0)
    other.load_state_dict(state)
    assert other.step_count == 12
    head = [g["lr"] for g in opt.param_groups if not g["is_backbone"]]
    assert head[0] == pytest.approx(lr(12))
    # single stage: full lr, no stage-2 scaling
    single = TwoStageSchedule(opt, base_lr=1.0, total_steps=10, stage1_steps=0, warmup_steps=0, min_lr_ratio=0.0)
    assert single.lr_at(0) == pytest.approx(1.0) and single.stage(0) == 2


def test_ema_tracks_weights():
    model = nn.Linear(2, 1)
    ema = ModelEma(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(1.0)
    start = ema.module.weight.clone()
    d = ema.current_decay()
    ema.update(model)
    assert torch.allclose(ema.module.weight, d * start + (1 - d) * 1.0)
    for _ in range(50):
        ema.update(model)
    assert torch.allclose(ema.module.weight, torch.ones_like(start), atol=1e-6)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_rng_state_round_trips_through_weights_only_load():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = capture_rng_state()
    buf = io.BytesIO()
    torch.save({"rng": state}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["rng"]
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(loaded)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_derive_seed_is_stable_and_spread():
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3)
    seeds = {derive_seed(42, epoch, i) for epoch in range(3) for i in range(100)}
    assert len(seeds) == 300
    assert all(0 <= s < 2**63 for s in seeds)


def test_resumable_sampler_continues_the_same_order():
    data = list(range(10))
    full = ResumableDistributedSampler(data, num_replicas=2, rank=1, seed=5)
    full.set_epoch(3)
    order = list(full)
    part = ResumableDistributedSampler(data, num_replicas=2, rank=1, seed=5)
    part.set_epoch(3)
    part.set_start_index(2)
    assert list(part) == order[2:] and len(part) == len(order) - 2
    full.set_epoch(4)
    assert list(full) != order  # reshuffled each epoch


def test_auto_compile_only_for_long_runs():
    from engine.training.setup import COMPILE_MIN_BUDGET_S, COMPILE_MIN_STEPS, keep_compile_for_run_length

    assert not keep_compile_for_run_length(None, 240.0, 10)
    assert keep_compile_for_run_length("auto", COMPILE_MIN_BUDGET_S, 10)
    assert not keep_compile_for_run_length("auto", None, COMPILE_MIN_STEPS - 1)
    assert keep_compile_for_run_length(None, None, COMPILE_MIN_STEPS)
    assert keep_compile_for_run_length(True, 60.0, 1)  # --compile forces it


def test_validation_on_the_device_equals_pysodmetrics():
    from engine.evaluation.metrics import CODMetrics
    from engine.training.validation_pass import ValidationBatches, validate
    from models import build_model

    torch.manual_seed(0)
    model = build_model(backbone="edgenext_xx_small", dim=16).eval()
    batches = [{"image": torch.randn(2, 3, 64, 64), "mask": (torch.rand(2, 1, 64, 64) > 0.6).float()} for _ in range(2)]
    got = validate(model, batches, torch.device("cpu"))
    reference = CODMetrics(measures=("Sm", "MAE"))
    with torch.no_grad():
        for b in batches:
            for prob, gt in zip(torch.sigmoid(model(b["image"])), b["mask"]):
                reference.update(prob[0], gt[0])
    ref = reference.compute()
    assert got["n"] == ref["n"] == 4
    assert got["Sm"] == pytest.approx(ref["Sm"], abs=1e-9) and got["MAE"] == pytest.approx(ref["MAE"], abs=1e-9)
    cached = ValidationBatches(batches, torch.device("cpu"), max_bytes=2**20)
    first, second = validate(model, cached, torch.device("cpu")), validate(model, cached, torch.device("cpu"))
    assert cached.cached is not None and cached.nbytes > 0
    assert first == second and first["Sm"] == pytest.approx(got["Sm"], abs=1e-12)


def test_validation_cache_respects_its_size_limit():
    from engine.training.validation_pass import ValidationBatches

    batches = [{"image": torch.randn(2, 3, 8, 8), "mask": torch.zeros(2, 1, 8, 8)} for _ in range(3)]
    called = []
    small = ValidationBatches(batches, torch.device("cpu"), max_bytes=1000, on_cached=lambda: called.append(1))
    assert len(list(small)) == 3 and small.cached is None and not called  # too big: decoded every pass
    big = ValidationBatches(batches, torch.device("cpu"), max_bytes=10**6, on_cached=lambda: called.append(1))
    assert len(list(big)) == 3 and big.cached is not None and called == [1]
    assert big.cached[0]["mask_u8"].dtype == torch.uint8


def test_validation_subset_is_fixed_and_spread():
    from engine.training.loaders import val_subset

    assert val_subset(10, 0) == list(range(10)) and val_subset(10, 20) == list(range(10))
    picked = val_subset(600, 150)
    assert len(picked) == 150 and picked == val_subset(600, 150) and picked[0] == 0 and picked[-1] >= 590



def test_capturable_optimizer_rates_are_written_in_place_and_resumed_floats_become_tensors():
    model = _Tiny()
    opt = build_optimizer(model, 1e-3, 0.05, device_type="cpu", capturable_on=torch.device("cpu"))
    sched = TwoStageSchedule(opt, base_lr=1e-3, total_steps=10, stage1_steps=0, warmup_steps=2)
    rates = [g["lr"] for g in opt.param_groups]
    assert all(isinstance(r, torch.Tensor) for r in rates)
    assert len({id(r) for r in rates}) == len(rates)  # one tensor per group: backbone rates differ
    sched.step()
    # the same tensors (a captured step reads them), holding the schedule's new rates
    assert all(g["lr"] is r for g, r in zip(opt.param_groups, rates))
    assert [float(g["lr"]) for g in opt.param_groups] == pytest.approx(sched.get_last_lr())
    # a state saved by an eager run holds floats: the next rate write turns them into tensors
    for g in opt.param_groups:
        g["lr"] = 0.5
    sched.step()
    assert all(isinstance(g["lr"], torch.Tensor) for g in opt.param_groups)
    assert [float(g["lr"]) for g in opt.param_groups] == pytest.approx(sched.get_last_lr())


def test_ema_prepare_then_fold_equals_update():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    a, b = ModelEma(model, decay=0.9), ModelEma(model, decay=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    a.update(model)
    b.prepare()
    b.fold(model, apply=torch.tensor(1.0))
    b.num_updates += 1
    for x, y in zip(a.module.state_dict().values(), b.module.state_dict().values()):
        assert torch.equal(x, y)
    # a skipped step (apply 0) leaves the average alone
    before = [t.clone() for t in b.module.state_dict().values()]
    b.prepare()
    b.fold(model, apply=torch.tensor(0.0))
    assert all(torch.equal(x, y) for x, y in zip(before, b.module.state_dict().values()))


def test_cuda_graphs_are_used_only_where_exact():
    from types import SimpleNamespace

    from engine.config import ConfigError
    from engine.training.setup import resolve_cuda_graphs

    def rt(device="cuda", distributed=False, dtype=torch.bfloat16, compile=False):
        return SimpleNamespace(device=torch.device(device), ctx=SimpleNamespace(distributed=distributed),
                               amp_dtype=dtype, compile=compile)

    assert resolve_cuda_graphs("auto", rt(), 1) == (True, "on")
    assert resolve_cuda_graphs(True, rt(dtype=None), 1)[0]
    assert resolve_cuda_graphs(None, rt(), 1) == (True, "on")  # the default
    assert resolve_cuda_graphs(False, rt(), 1) == (False, "off (train.cuda_graphs: false)")
    off, why = resolve_cuda_graphs(True, rt(device="cpu", dtype=torch.float16), 2)
    assert not off and all(r in why for r in ("not a CUDA device", "fp16", "accumulation"))
    assert resolve_cuda_graphs("auto", rt(compile=True), 1) == (True, "on")  # the compiled step is captured
    assert "several processes" in resolve_cuda_graphs("auto", rt(distributed=True), 1)[1]
    with pytest.raises(ConfigError, match="cuda_graphs"):
        resolve_cuda_graphs("sometimes", rt(), 1)


@pytest.mark.parametrize("item, wanted", [("train.cuda_graphs=false", False), ("train.cuda_graphs=true", True),
                                          ("train.cuda_graphs=auto", True), ("train.cuda_graphs=null", True)])
def test_cuda_graphs_switch_passes_the_config_checks(item, wanted):
    # The documented off switch must get through the typed merge of --set items into the defaults.
    from types import SimpleNamespace

    from engine.settings import ConfigRequest
    from engine.training.setup import resolve_cuda_graphs

    config = ConfigRequest.read(set_items=[item]).resolve()
    rt = SimpleNamespace(device=torch.device("cuda"), ctx=SimpleNamespace(distributed=False),
                         amp_dtype=torch.bfloat16, compile=False)
    assert resolve_cuda_graphs(config.train.cuda_graphs, rt, 1)[0] is wanted


def test_ema_fold_never_reads_its_weight_on_the_host():
    from _train_helpers import RecordOps

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ema = ModelEma(model, decay=0.9)
    ema.prepare()
    with RecordOps() as recorded:
        ema.fold(model, apply=torch.tensor(1.0))
        ema.fold(model)
    # _local_scalar_dense is .item(): on a GPU a wait for the device on every step, and inside a
    # CUDA-graph capture an error that breaks the capture.
    assert "_local_scalar_dense" not in recorded.ops
    assert any(op.startswith("_foreach") for op in recorded.ops)


def test_raised_at_names_the_project_line():
    from engine.training.graphed_step import raised_at

    def broken():
        return torch.zeros(2).item()  # a host read, raised inside torch

    try:
        broken()
    except Exception as exc:  # noqa: BLE001
        where = raised_at(exc)
    assert where.startswith("tests/engine/training/test_train_components.py:")


@pytest.mark.parametrize("device, cores, processes, want", [
    ("cuda", 16, 1, 8),  # capped: more workers did not train faster (README, Training)
    ("cuda", 4, 1, 4),  # Kaggle
    ("cuda", 2, 1, 2),  # Colab
    ("cuda", 16, 2, 8),
    ("cuda", 4, 2, 2),  # two processes share the host's cores
    ("cuda", 1, 2, 1),  # never 0: the main process would decode
    ("cpu", 16, 1, 2),  # the CPU step needs the cores
    ("cpu", 1, 1, 1),
])
def test_auto_num_workers(monkeypatch, device, cores, processes, want):
    import engine.training.loaders as loaders

    monkeypatch.setattr(loaders, "usable_cpus", lambda: cores)
    assert loaders.auto_num_workers(device, processes) == want


def test_usable_cpus_is_a_positive_count():
    from engine.training.loaders import usable_cpus

    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)


def test_run_request_names_the_checkpoint_file_it_resumes_from(tmp_path):
    from engine.training.request import RunRequest

    last = tmp_path / "last.pt"
    assert RunRequest().source is None
    assert RunRequest(resume=last).source == last
    assert RunRequest(resume={"step": 3}, resume_path=last).source == last  # a loaded dict and its file
    assert RunRequest(resume={"step": 3}).source is None


def test_build_loaders_shards_the_validation_subset_by_rank():
    from engine.training.loaders import LoaderSettings, build_loaders, val_subset

    train_set, val_set = list(range(8)), list(range(10))
    settings = LoaderSettings(batch_size=2, eval_batch_size=3, seed=1, rank=1, world_size=2, max_val_images=4)
    loaders = build_loaders(train_set, val_set, settings)
    assert list(loaders.val.dataset.indices) == val_subset(10, 4)[1::2]
    assert loaders.batches_per_epoch == 2  # 4 training images per process, 2 per batch


def test_build_loaders_refuses_a_batch_larger_than_a_process_share():
    from engine.training.loaders import LoaderSettings, build_loaders

    with pytest.raises(ValueError, match="lower --batch-size"):
        build_loaders(list(range(4)), list(range(2)), LoaderSettings(batch_size=3, eval_batch_size=1, world_size=2))
