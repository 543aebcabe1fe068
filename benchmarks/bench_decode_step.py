"""One decoding step of the transformers backend: ms per step and per row, by rows and cache.

Times the decoder's step on a KV cache of ``--context`` positions per row filled with random
keys/values (no prefill: only the step is measured), for several batch sizes, with
transformers' ``DynamicCache`` (grows by ``torch.cat``: the whole cache is copied every step)
and the backend's reserved cache (each step writes one column in place), interleaved
(A, B, B, A …) so that load drift on a shared machine hits both alike. Prints medians and the
ratios, and the weights' bytes read per step so the memory-traffic bound can be judged.

Usage::

    .venv/bin/python benchmarks/bench_decode_step.py
    .venv/bin/python benchmarks/bench_decode_step.py --context 2000 --rows 4,8,16 --steps 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--context", type=int, default=2000, help="cached positions per row")
    parser.add_argument("--rows", default="4,8,16")
    parser.add_argument("--steps", type=int, default=8, help="steps timed per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import torch

    from harness.models.loading import load_model

    loaded = load_model(args.model)
    weights = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    print(
        f"model {args.model}: {weights / 1e6:.0f} MB of weights read per step; "
        f"{torch.get_num_threads()} torch thread(s); load average {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs; context {args.context}",
        flush=True,
    )
    kinds = ("dynamic", "reserved")
    times: dict[tuple[str, int], list[float]] = {}
    for round_ in range(args.rounds):
        for rows in (int(r) for r in args.rows.split(",")):
            for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
                seconds = step_seconds(loaded, kind, rows, args.context, args.steps)
                times.setdefault((kind, rows), []).append(seconds)
                print(f"  {kind} rows {rows}: {seconds * 1e3:.0f} ms/step", flush=True)
    print(
        f"\n{'rows':>4} {'dynamic ms/step':>16} {'reserved ms/step':>17} {'ratio':>6} "
        f"{'reserved ms/row':>16}"
    )
    for rows in (int(r) for r in args.rows.split(",")):
        dynamic = statistics.median(times["dynamic", rows])
        reserved = statistics.median(times["reserved", rows])
        print(
            f"{rows:>4} {dynamic * 1e3:>16.0f} {reserved * 1e3:>17.0f} {dynamic / reserved:>5.2f}x "
            f"{reserved * 1e3 / rows:>16.1f}"
        )


def step_seconds(loaded: Any, kind: str, rows: int, context: int, steps: int) -> float:
    """Median seconds of one decoding step over ``steps`` steps after one untimed step."""
    import torch
    from transformers import DynamicCache

    from harness.backends.reserved_cache import reserved_cache

    model = loaded.model
    config = model.config.get_text_config(decoder=True)
    kv_heads = config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    generator = torch.Generator().manual_seed(0)
    layers = [
        tuple(torch.randn(rows, kv_heads, context, head_dim, generator=generator) for _ in "kv")
        for _ in range(config.num_hidden_layers)
    ]
    if kind == "dynamic":
        cache = DynamicCache(ddp_cache_data=layers, config=model.config)
    else:
        cache = reserved_cache(model.config, steps + 1, layers)
    decoder = model.get_decoder()
    head = model.get_output_embeddings()
    mask = torch.ones(rows, context, dtype=torch.long)
    token = torch.zeros(rows, 1, dtype=torch.long)
    spent = []
    with torch.inference_mode():
        for step in range(steps + 1):
            mask = torch.cat([mask, torch.ones(rows, 1, dtype=torch.long)], dim=1)
            positions = torch.full((rows, 1), context + step, dtype=torch.long)
            started = time.perf_counter()
            output = decoder(
                input_ids=token,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
            )
            cache = output.cache
            token = head(output.last_hidden_state[:, -1]).argmax(dim=-1)[:, None]
            if step:
                spent.append(time.perf_counter() - started)
    return statistics.median(spent)


if __name__ == "__main__":
    main()
