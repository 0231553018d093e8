"""``python -m tests.serving.fake_server --port P [--delay S] [--workers N] ...``: the
serving runner over the fake model of ``fakes.py`` (slow or poisoned on purpose)."""

from __future__ import annotations

import argparse
import functools

from plinth.serving.app import AppLimits, ServingApp
from plinth.serving.batching import BatchLimits
from plinth.serving.runner import bind, serve
from tests.serving.fakes import fake_model


def fake_app(delay: float, limits: AppLimits) -> ServingApp:
    return ServingApp(fake_model(delay), limits)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--max-queue", type=int, default=256)
    parser.add_argument("--max-body-bytes", type=int, default=8 << 20)
    args = parser.parse_args()
    batching = BatchLimits(args.max_batch_size, args.max_wait_ms, args.max_queue)
    limits = AppLimits(batching, args.max_body_bytes)
    factory = functools.partial(fake_app, args.delay, limits)
    serve(factory, bind("127.0.0.1", args.port), workers=args.workers)


if __name__ == "__main__":
    main()
