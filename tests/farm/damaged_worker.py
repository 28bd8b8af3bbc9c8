"""``python -m tests.farm.damaged_worker KIND worker ARGS``: ``farm worker ARGS``, whose
transcode attempts damage their results as farm.media.damage.attempt_damage(KIND) does.

Chaos tests start it in place of the farm command (Cluster.start_worker's ``damage``): the
worker is built as the farm builds it, and its context gets the hook before it takes a job.
"""

from __future__ import annotations

import sys
from typing import Any

from celery.signals import worker_init

from farm.cli import main
from farm.context import worker_context
from farm.media.damage import attempt_damage


def run(kind: str, args: list[str]) -> None:
    hook = attempt_damage(kind)

    # Sent in the worker's own process once its app is set up and before its pool starts,
    # so the pool's processes inherit the hook.
    @worker_init.connect(weak=False)
    def _damage(sender: Any, **_: Any) -> None:
        worker_context(sender.app).damage = hook

    sys.argv = ["farm", *args]
    main()


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2:])
