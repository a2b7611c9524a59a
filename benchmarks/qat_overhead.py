"""Time QAT training steps against float training on the CPU.

Each variant is TC-ResNet8 for (40, 101) MFCC inputs and 12 classes, built
by `qsearch.models.build_model` with its own qconfig. One step is forward,
cross-entropy loss, backward and an SGD update on one batch. The variants
take turns, one step each, in an order that rotates every round, so that
load changes and thermal drift affect all of them alike. The table reports
the median time per step and its ratio to float.

    .venv/bin/python benchmarks/qat_overhead.py --rounds 40 --threads 2
    .venv/bin/python benchmarks/qat_overhead.py --rounds 40 --threads 1 --clock cpu

The targets are printed as PASS or FAIL; the exit status is 0 either way.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from qsearch.models import build_model
from qsearch.quant import fused, get_qat_qconfig

INPUT_SHAPE = (40, 101)
NUM_CLASSES = 12
BASE = {"bw_w": 6, "bw_f": 8, "bw_b": 8}


# Variant name -> qconfig factory (None builds the float model).
VARIANTS: dict[str, Callable[[], Any]] = {
    "float": lambda: None,
    "qsearch noise 1.0": lambda: get_qat_qconfig({**BASE, "noise_prob": 1.0}),
    "qsearch noise 0.8": lambda: get_qat_qconfig({**BASE, "noise_prob": 0.8}),
    "qsearch pow2 w4": lambda: get_qat_qconfig({**BASE, "bw_w": 4, "power_of_2": True}),
    "torch fbgemm": lambda: torch.ao.quantization.get_default_qat_qconfig("fbgemm"),
}

# (variant, limit on its ratio to float or None, must be faster than fbgemm)
TARGETS = [
    ("qsearch noise 1.0", 1.2, True),
    ("qsearch noise 0.8", 1.35, True),
]


class Trainer:
    """One variant's model and optimizer, with a method that times one training step."""

    def __init__(self, name: str, qconfig: Any, seed: int, clock: Callable[[], float]) -> None:
        torch.manual_seed(seed)
        self.name = name
        self.model = build_model(
            "tc_res8", input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES, qconfig=qconfig
        ).train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.clock = clock

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Run one training step and return its duration in seconds on `clock`."""
        start = self.clock()
        loss = F.cross_entropy(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return self.clock() - start


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=40, help="timed steps per variant (default: 40)"
    )
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed steps per variant before timing (default: 5)"
    )
    parser.add_argument("--batch", type=int, default=64, help="batch size (default: 64)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's own choice)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and data")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall measures elapsed time (the default). cpu measures the CPU time of this "
        "process, which other processes on a busy machine disturb less. Use cpu with --threads 1",
    )
    args = parser.parse_args()

    for name in ("rounds", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, but got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be at least 0, but got {args.warmup}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, but got {args.threads}")
    return args


def run_rounds(
    trainers: list[Trainer], x: torch.Tensor, y: torch.Tensor, rounds: int
) -> dict[str, list[float]]:
    """Time `rounds` steps of every trainer, one step each per round, in rotating order."""
    times: dict[str, list[float]] = {trainer.name: [] for trainer in trainers}
    for round_index in range(rounds):
        shift = round_index % len(trainers)
        for trainer in trainers[shift:] + trainers[:shift]:
            times[trainer.name].append(trainer.step(x, y))
    return times


def print_table(times: dict[str, list[float]]) -> dict[str, float]:
    medians = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    float_ms = medians["float"]
    print(f"{'variant':<20} {'median ms/step':>14} {'p25-p75 ms':>14} {'ratio to float':>15}")
    for name, values in times.items():
        q1, _, q3 = statistics.quantiles([v * 1e3 for v in values], n=4)
        spread = f"{q1:.1f}-{q3:.1f}"
        print(f"{name:<20} {medians[name]:>14.2f} {spread:>14} {medians[name] / float_ms:>15.2f}")
    return medians


def print_targets(medians: dict[str, float]) -> None:
    float_ms = medians["float"]
    fbgemm_ms = medians["torch fbgemm"]
    for name, limit, beat_fbgemm in TARGETS:
        ratio = medians[name] / float_ms
        if limit is not None:
            verdict = "PASS" if ratio <= limit else "FAIL"
            print(f"{verdict}: {name} within {limit}x float (got {ratio:.2f}x)")
        if beat_fbgemm:
            verdict = "PASS" if medians[name] < fbgemm_ms else "FAIL"
            print(
                f"{verdict}: {name} faster than torch fbgemm "
                f"({medians[name]:.2f} ms vs {fbgemm_ms:.2f} ms)"
            )


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    # fbgemm activations use reduce_range, which PyTorch 2.x deprecates with a warning.
    warnings.filterwarnings("ignore", message="Please use quant_min and quant_max")
    clock = time.perf_counter if args.clock == "wall" else time.process_time

    print(
        f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, "
        f"batch {args.batch}, {args.warmup} warm-up steps, {args.rounds} rounds, "
        f"{args.clock} clock"
    )
    trainers = [
        Trainer(name, make_qconfig(), args.seed, clock) for name, make_qconfig in VARIANTS.items()
    ]
    kernels = "in use" if fused.available() else f"not in use ({fused.unavailable_reason()})"
    print(f"fused quantizer kernels: {kernels}")
    generator = torch.Generator().manual_seed(args.seed)
    # MFCC-sized inputs scaled into the [-1, 1) range of the input quantizer.
    x = (torch.randn(args.batch, *INPUT_SHAPE, generator=generator) * 0.3).clamp(-1.0, 0.99)
    y = torch.randint(0, NUM_CLASSES, (args.batch,), generator=generator)

    run_rounds(trainers, x, y, args.warmup)
    times = run_rounds(trainers, x, y, args.rounds)
    medians = print_table(times)
    print_targets(medians)
    # Other processes on the machine slow the steps down unevenly.
    print(f"load average over the last minute at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
