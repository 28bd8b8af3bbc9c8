"""The farm: one orchestrator's Celery cluster, its media engine and its node API.

Imports go one way, ``gateway -> farm -> chain``, and the gateway (or any other service built
on the farm) uses only the farm's public face; everything else in ``farm`` is internal and may
change without notice:

- :mod:`farm` itself (``__version__``);
- :mod:`farm.client`: submit jobs to a cluster and collect results, the cluster's connection
  settings, segment timeouts, the ticket queue a cluster announces;
- :mod:`farm.ai.client`: submit AI jobs to a cluster, collect their results and stream LLM
  chunks;
- :mod:`farm.errors`: the error hierarchy and its codes;
- :mod:`farm.blobstore`: the blob stores;
- the media tools: :mod:`farm.media.profiles`, :mod:`farm.media.source`,
  :mod:`farm.media.segmenter`, :mod:`farm.media.assemble`, :mod:`farm.media.output`,
  :mod:`farm.media.pixels`;
- :mod:`farm.protocol`: Livepeer's wire protocol pieces (``net`` protobufs, gRPC framing,
  SegData signing bytes, the AI pipeline table and result format, TLS pinning, safe fetching);
- :mod:`farm.runtime`: what a service shares with the farm's processes (settings base, SQL
  engine, Redis URLs, reachability, payment metrics).

Nothing in ``farm`` imports ``gateway`` at module level: the ``farm`` command is the one
composition root, and its gateway commands import ``gateway`` inside the command functions.
``tests/gateway/test_imports.py`` holds both rules.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
