#!/usr/bin/env python3
"""Model-only GPU throughput of random-weight timm architectures, with imagebench's method.

For each architecture, batch size (1, 32, 256) and dtype (float32, and bfloat16 and
float16 AMP), this script runs ``imagebench.throughput.measure_throughput``. That is
the pre-flight check against float32, warm-up iterations, and timed batches with a CUDA
synchronization after each, with the CUDA allocator's peak memory. The weights are
random (``pretrained=False``), so nothing is downloaded, and the inputs are seeded
random normal tensors. With random weights the top-1 agreement with float32 carries no
meaning. The check therefore runs with ``min_agreement`` 0 and only rejects NaN or inf
logits, and the agreement is still recorded.

Run it on a machine with a CUDA GPU, from the repository root:

    python benchmarks/gpu_throughput.py --output results/benchmarks/gpu_throughput.csv

and timm's own benchmark script beside it for comparison (it is in the timm repository,
not in the timm wheel; pick the checkout of the installed timm version):

    git clone https://github.com/huggingface/pytorch-image-models
    python pytorch-image-models/benchmark.py --bench inference --model resnet50 -b 256 \\
        --num-warm-iter 10 --num-bench-iter 40 --results-file timm-resnet50-b256.csv
    # add --amp for float16 AMP and --channels-last for that layout; `python benchmark.py --help`
    # lists the precision options of your checkout (the version read for this script had
    # --precision float32|amp|float16|bfloat16, where float16 and bfloat16 cast the model
    # instead of using AMP).

``--print-timm-commands`` prints those commands for every architecture and batch size.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

DEFAULT_ARCHITECTURES = "resnet50,tf_efficientnet_lite0,efficientnet_b0,convnext_tiny,vit_base_patch16_224"
DTYPE_LABELS = {"float32": None, "bfloat16": "bfloat16", "float16": "float16"}

_LOGGER = logging.getLogger("benchmarks.gpu_throughput")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architectures", default=DEFAULT_ARCHITECTURES, help="comma-separated timm architectures")
    parser.add_argument("--batch-sizes", default="1,32,256", help="comma-separated batch sizes")
    parser.add_argument("--dtypes", default="float32,bfloat16,float16",
                        help="comma-separated: float32, bfloat16 (AMP), float16 (AMP)")
    parser.add_argument("--channels-last", action="store_true", help="also measure every setting in channels_last")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu for a quick check of the script")
    parser.add_argument("--threads", type=int, default=4, help="torch CPU threads of each setting")
    parser.add_argument("--warmup", type=int, default=10, help="untimed iterations per setting")
    parser.add_argument("--min-iterations", type=int, default=40, help="timed iterations per setting, at least")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timed seconds per setting, at least")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="timed seconds per setting, at most")
    parser.add_argument("--check-images", type=int, default=64, help="random images of the pre-flight check")
    parser.add_argument("--output", type=Path, default=Path("results/benchmarks/gpu_throughput.csv"),
                        help="CSV file of all measurements")
    parser.add_argument("--print-timm-commands", action="store_true",
                        help="print the matching commands of timm's benchmark.py and exit")
    arguments = parser.parse_args(argv)
    arguments.architectures = [name for name in arguments.architectures.split(",") if name]
    arguments.batch_sizes = [int(size) for size in arguments.batch_sizes.split(",") if size]
    arguments.dtypes = [dtype for dtype in arguments.dtypes.split(",") if dtype]
    unknown = sorted(set(arguments.dtypes) - set(DTYPE_LABELS))
    if unknown:
        parser.error(f"unknown dtype(s) {unknown}; use {', '.join(DTYPE_LABELS)}")
    return arguments


def timm_commands(arguments: argparse.Namespace) -> list[str]:
    commands = []
    for architecture in arguments.architectures:
        for batch_size in arguments.batch_sizes:
            base = (f"python benchmark.py --bench inference --model {architecture} -b {batch_size} "
                    f"--num-warm-iter {arguments.warmup} --num-bench-iter {arguments.min_iterations}")
            commands.append(f"{base} --results-file timm-{architecture}-b{batch_size}-fp32.csv")
            commands.append(f"{base} --amp --results-file timm-{architecture}-b{batch_size}-amp.csv")
    return commands


def measure_all(arguments: argparse.Namespace):
    import polars as pl
    import timm

    from imagebench.throughput import ThroughputSetting, TimingOptions, measure_throughput, random_check_images

    options = TimingOptions(
        warmup_iterations=arguments.warmup, min_iterations=arguments.min_iterations,
        min_seconds=arguments.min_seconds, max_seconds=arguments.max_seconds,
        check_images=arguments.check_images, min_agreement=0.0,
    )
    rows = []
    for architecture in arguments.architectures:
        for batch_size in arguments.batch_sizes:
            for dtype in arguments.dtypes:
                for channels_last in ([False, True] if arguments.channels_last else [False]):
                    # A fresh model per setting: measure_throughput converts the model in place.
                    model = timm.create_model(architecture, pretrained=False)
                    input_size = model.pretrained_cfg.get("input_size", (3, 224, 224))
                    images = random_check_images(input_size=input_size, count=options.check_images, seed=0)
                    name = f"{arguments.device}-{dtype}-b{batch_size}" + ("-cl" if channels_last else "")
                    setting = ThroughputSetting(
                        name=name, device=arguments.device, batch_size=batch_size, amp_dtype=DTYPE_LABELS[dtype],
                        channels_last=channels_last, threads=arguments.threads,
                    )
                    row = measure_throughput(
                        model=model, model_name=architecture, architecture=architecture, setting=setting,
                        options=options, images=images,
                    )
                    rows.append(row)
                    _log_row(row.row(0, named=True))
                    del model
                    _empty_cuda_cache()
    return pl.concat(rows)


def _log_row(row: dict) -> None:
    if not row["valid"]:
        _LOGGER.info("%-24s %-18s invalid: %s", row["model"], row["setting"], row["invalid_reason"])
        return
    _LOGGER.info("%-24s %-18s %10.1f images/s  p50 %8.2f ms  peak %8.0f MiB",
                 row["model"], row["setting"], row["images_per_second"], row["latency_p50_ms"], row["peak_memory_mb"])


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if arguments.print_timm_commands:
        print("\n".join(timm_commands(arguments)))
        return 0

    import torch

    if arguments.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device is visible; run this on a GPU machine, or pass --device cpu to check the script",
              file=sys.stderr)
        return 2

    frame = measure_all(arguments)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    frame.drop("input_size").write_csv(arguments.output)
    _LOGGER.info("wrote %d measurements to %s", frame.height, arguments.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
