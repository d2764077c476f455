#!/usr/bin/env python3
"""Send exactly N chat completions (C at a time) and check each answered 200.

    fixed_load.py URL N [--concurrency C] [--api-key KEY]

For bench/instructions.sh, which needs a fixed count, not a duration (wrk's -d).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import aiohttp

BODY = (b'{"model":"gpt-4o-mini","messages":[{"role":"user",'
        b'"content":"Say hello in one short sentence please."}]}')


async def send(url: str, count: int, concurrency: int, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    left = iter(range(count))
    ok = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok
        for _ in left:
            async with session.post(url, data=BODY, headers=headers) as response:
                await response.read()
                ok += response.status == 200

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("count", type=int)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--api-key", default="sk-llmport-bench")
    args = parser.parse_args()
    ok = asyncio.run(send(args.url, args.count, args.concurrency, args.api_key))
    if ok != args.count:
        print(f"fixed_load: {args.count - ok} of {args.count} requests failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
