"""The Celery app of a process that runs the farm's tasks: the local worker, the remote
transcoder, the go-livepeer bridge and the node (its reconciler). A submitter uses
farm.celery_app.create_app, which loads no tasks."""

from __future__ import annotations

from celery import Celery

from farm.ai.tasks import register_ai_tasks
from farm.celery_app import create_app
from farm.chain_tasks import register_chain_tasks
from farm.context import WorkerContext, install
from farm.settings import ClusterSettings
from farm.tasks import register_tasks

__all__ = ["create_worker_app"]


def create_worker_app(settings: ClusterSettings | None = None) -> Celery:
    """create_app with the farm's tasks registered, run in a local worker's context (farm.context),
    which each worker kind completes or replaces as it starts."""
    settings = settings or ClusterSettings()
    app = create_app(settings)
    install(app, WorkerContext.local(settings))
    register_tasks(app)
    register_ai_tasks(app)
    register_chain_tasks(app, settings)
    return app
