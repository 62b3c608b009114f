"""`reward-serve`: parse settings from flags and environment, check the checkpoint, run uvicorn."""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

from app.settings import Settings
from reward_model.checkpoint import read_layout, require_length_fit
from reward_model.console import configure_logging
from reward_model.engines import check_engine
from reward_model.errors import RewardError

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("app.cli")

KERNEL_CACHE_ENTRIES = "64"


def bound_kernel_caches() -> None:
    """On CPU, PyTorch's oneDNN layer (ideep) keeps a compiled kernel, with its buffers, for every
    batch shape it meets, up to 1024 by default: under varied traffic the demo ensemble's memory grew
    from 2.0 to 3.0 GB over ten minutes before it levelled off. With 64 it stays flat, at the same
    throughput (`bench/soak.py`; README, "Reliability and security"). Must run before torch loads;
    an operator's own values win."""
    for name in ("LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY"):
        os.environ.setdefault(name, KERNEL_CACHE_ENTRIES)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `reward-serve`."""
    bound_kernel_caches()
    from pydantic import ValidationError
    from pydantic_settings import CliApp

    try:
        settings = CliApp.run(
            Settings, cli_args=sys.argv[1:] if argv is None else argv, cli_settings_source=None
        )
    except ValidationError as exc:  # a bad flag or environment value: one line, not pydantic's report
        problems = [f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors()]
        print(f"reward-serve: error: {'; '.join(problems)}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
    try:
        if settings.model is None:
            # The only place the service reaches the trainer: to train the demo on first start.
            from training.demo import ensure_demo_model

            settings = settings.model_copy(update={"model": str(ensure_demo_model())})
        assert settings.model is not None
        # the contract, checked without loading weights: fail in one line
        layout = read_layout(settings.model, allow_pickle=settings.allow_pickle)
        if settings.length_residual:
            require_length_fit(layout)
        check_engine(settings.engine)
        from app.api.auth import api_keys

        api_keys(settings)  # an unreadable or empty key file fails here, in one line
    except RewardError as exc:
        print(f"reward-serve: error: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None
    serve(settings)


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    """uvicorn's settings for the service. Its HTTP parser and event loop are left to uvicorn, which
    takes httptools and uvloop (both dependencies of the project) where they are installed."""
    import uvicorn

    debug = settings.log_level == "debug"
    return uvicorn.Config(
        "app.server:create_app",  # replaced by `serve`; uvicorn only needs a valid config object
        host=settings.host,
        port=settings.port,
        log_level="info" if debug else "warning",  # at info, our own lines say what happens
        access_log=debug,
        timeout_graceful_shutdown=5,  # after the drain (DrainingServer), only idle connections remain
    )


def serve(settings: Settings) -> None:
    """Run one uvicorn worker: one model copy per member, one batch queue per copy."""
    from app.server import create_app

    failure: list[str] = []
    config = uvicorn_config(settings)
    try:
        sock = config.bind_socket()  # bound once first, so that port 0 is known before the model loads
    except SystemExit:
        print(f"reward-serve: error: cannot bind {settings.host}:{settings.port}", file=sys.stderr)
        raise SystemExit(2) from None
    # ...and handed back: uvicorn binds it again itself. Serving on a socket made here costs 40 ms a
    # request, because asyncio sets TCP_NODELAY only on sockets created with IPPROTO_TCP.
    config.port = sock.getsockname()[1]
    sock.close()
    settings = settings.model_copy(update={"port": config.port})
    from app.shutdown import DrainingServer

    server = DrainingServer(config, settings.drain_seconds)

    def on_fatal(message: str) -> None:
        failure.append(message)
        server.should_exit = True

    config.app = server.app = create_app(settings, on_fatal=on_fatal)
    server.run()
    if failure:
        print(f"reward-serve: error: {failure[0]}", file=sys.stderr)
        raise SystemExit(2)
