"""`reward-serve`: parse settings from flags and environment, check the checkpoint, run uvicorn."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from app.checkpoint import is_ensemble, load_manifest, validate_checkpoint
from app.errors import CheckpointError
from app.settings import Settings


def check_model(path: Path) -> None:
    """Check the checkpoint contract without loading weights, so a broken model fails in one line."""
    if is_ensemble(path):
        for member in load_manifest(path).members:
            validate_checkpoint(path / member.path)
    else:
        validate_checkpoint(path)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `reward-serve`."""
    from pydantic_settings import CliApp

    settings = CliApp.run(Settings, cli_args=sys.argv[1:] if argv is None else argv, cli_settings_source=None)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if settings.model is None:
            from app.demo import ensure_demo_model

            settings = settings.model_copy(update={"model": str(ensure_demo_model())})
        assert settings.model is not None
        check_model(Path(settings.model))
    except CheckpointError as exc:
        print(f"reward-serve: error: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None
    serve(settings)


def serve(settings: Settings) -> None:
    """Run one uvicorn worker: one model copy per member, one batch queue per copy."""
    import uvicorn

    from app.server import create_app

    failure: list[str] = []
    config = uvicorn.Config(
        "app.server:create_app",  # replaced below; uvicorn only needs a valid config object
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)

    def on_fatal(message: str) -> None:
        failure.append(message)
        server.should_exit = True

    config.app = create_app(settings, on_fatal=on_fatal)
    server.run()
    if failure:
        print(f"reward-serve: error: {failure[0]}", file=sys.stderr)
        raise SystemExit(2)
