"""The lab's loop and the speed benchmark train through the product's one step."""
import torch

from engine.training.step import update_weights


def test_the_lab_loop_and_the_benchmark_train_through_the_one_step(monkeypatch):
    import benchmarks.preloaded as preloaded
    import engine.tools.benchmark as bench
    from benchmarks.quality_data import QualityData
    from engine.training.losses import CODLoss
    from models import build_model

    calls = []

    def counting(parts, batches, observe=None):
        calls.append(len(batches))
        return update_weights(parts, batches, observe)

    monkeypatch.setattr(preloaded, "update_weights", counting)
    monkeypatch.setattr(bench, "update_weights", counting)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 64, 64), generator=g, dtype=torch.uint8)
    masks = (torch.rand(4, 1, 64, 64, generator=g) > 0.5).to(torch.uint8) * 255
    data = QualityData("tiny", images, masks, images[:1], [masks[0, 0].numpy()])
    model = build_model(backbone="edgenext_xx_small", dim=16, num_experts=2, top_k=1, pretrained=False)
    settings = preloaded.QualitySettings(seconds=0, max_steps=2, batch_size=2, untimed_warmup_steps=1)
    record = preloaded.train_preloaded(model, data, settings, CODLoss(), seed=0)
    assert record.steps == 2 and calls == [1, 1, 1]  # one untimed warm-up step, then two
    workload = bench.Workload(model, torch.device("cpu"), 2, 64, None, channels_last=False)
    workload.train_step()
    assert calls == [1, 1, 1, 1]
