"""Time each MoE expert (forward + backward) at the map sizes the model runs them on.

    python benchmarks/profile_experts.py --device cuda --batch-size 16 --img-size 384 --dim 64

Prints one line per expert and level: milliseconds per forward+backward (CUDA events, median of
``--iters`` runs after warm-up), then the whole MoE layer. Use it to see where the MoE's share of
the training step goes.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.runtime import autocast_context, autocast_dtype, resolve_device  # noqa: E402
from models.experts import EXPERT_TYPES, build_experts  # noqa: E402
from models.moe import MoELayer  # noqa: E402


def _time_ms(fn, device, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        import time

        times = []
        for _ in range(iters):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


@click.command()
@click.option("--device", default="auto")
@click.option("--batch-size", type=int, default=16)
@click.option("--img-size", type=int, default=384)
@click.option("--dim", type=int, default=64)
@click.option("--strides", default="16,32", help="Map strides to time the experts at.")
@click.option("--precision", default="auto")
@click.option("--warmup", type=int, default=5)
@click.option("--iters", type=int, default=20)
def main(device, batch_size, img_size, dim, strides, precision, warmup, iters):
    """Per-expert forward+backward time at each MoE level's map size."""
    dev = resolve_device(device)
    dtype = autocast_dtype(dev, precision)
    fmt = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    for stride in (int(s) for s in strides.split(",")):
        side = img_size // stride
        x = torch.randn(batch_size, dim, side, side, device=dev).contiguous(memory_format=fmt).requires_grad_()
        pool = max(1, 16 // stride)
        experts = build_experts(list(EXPERT_TYPES), dim, pool=pool)
        moe = MoELayer(experts, dim).to(dev).to(memory_format=fmt).train()
        for p in moe.parameters():  # leave the zero init so every branch has real gradients
            p.data.add_(torch.randn_like(p) * 0.05)

        def run(module):
            def fn():
                with autocast_context(dev, dtype):
                    y = module(x)
                    y = y.features if hasattr(y, "features") else y
                y.float().square().mean().backward()
            return fn

        total = 0.0
        for name, expert in zip(EXPERT_TYPES, moe.experts):
            ms = _time_ms(run(expert), dev, warmup, iters)
            total += ms
            click.echo(f"stride {stride:>2} ({side}x{side}) {name:<10} {ms:7.3f} ms fwd+bwd")
        click.echo(f"stride {stride:>2} sum of experts      {total:7.3f} ms")
        click.echo(f"stride {stride:>2} whole MoE layer     {_time_ms(run(moe), dev, warmup, iters):7.3f} ms")


if __name__ == "__main__":
    main()
