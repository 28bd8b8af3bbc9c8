"""``farm``: the command group and its error handling."""

from __future__ import annotations

import logging
import sys

import click

from farm import __version__
from farm.cli import ai, chain, cluster, gateway, media, ops, remote
from farm.errors import FarmError

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="farm")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """A Livepeer-compatible, GPU-aware transcoding farm."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


cli.add_command(media.transcode_cmd)
cli.add_command(media.bench_cmd)
cli.add_command(media.gpus_cmd)
for _command in (
    cluster.worker_cmd,
    cluster.node_cmd,
    cluster.beat_cmd,
    cluster.flower_cmd,
    cluster.submit_cmd,
    cluster.job_cmd,
    cluster.up_cmd,
    cluster.health_cmd,
    gateway.gateway_cmd,
    chain.chain_group,
    gateway.keys_group,
    gateway.sessions_cmd,
    ops.exporter_cmd,
    ops.status_cmd,
    ai.ai_runner_cmd,
    remote.transcoder_cmd,
    remote.transcoders_group,
):
    cli.add_command(_command)


#: Modules whose exceptions mean a service (Redis, a database, the broker, an HTTP API) failed.
_SERVICE_ERRORS = ("redis.", "sqlalchemy.", "psycopg", "kombu.", "amqp.", "httpx", "httpcore")


def main() -> None:
    """Entry point: farm errors become one clear line and exit status 1."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:
        e.show()  # with the usage line and a pointer to --help
        sys.exit(e.exit_code)
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)  # the same line as FarmError's
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except FarmError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except OSError as e:
        # A file or directory the command reads or writes: say which and why, not a traceback.
        where = f"{e.filename}: " if e.filename is not None else ""
        click.echo(f"error: {where}{e.strerror or e}", err=True)
        sys.exit(1)
    except Exception as e:
        # A service the command needs is down or refused it: one line, not a traceback.
        if not type(e).__module__.startswith(_SERVICE_ERRORS):
            raise
        click.echo(f"error: {type(e).__name__}: {e}", err=True)
        sys.exit(1)
