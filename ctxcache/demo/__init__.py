"""``make demo``: the spec's story, played against the sample salon database.

Embedded by default (fakeredis and a Celery worker in threads of this
process); with ``CTXCACHE_REDIS_URL`` set, that Redis and a real
``celery -A tasks worker``, everything under the ``ctxcache-demo:``
namespace and deleted at the end. The modules, one per concern:

- :mod:`~ctxcache.demo.cli`: the command line and its error handling;
- :mod:`~ctxcache.demo.backends`: the embedded and the real cache, broker and worker;
- :mod:`~ctxcache.demo.story`: the spec's story, step by step;
- :mod:`~ctxcache.demo.sections`: the company-section chapters (freshness
  for two clients, a new client's own part, memory against the old layout);
- :mod:`~ctxcache.demo.common`: the namespace, timing, tables, a recording loader.
"""

from ctxcache.demo.backends import demo_broker
from ctxcache.demo.cli import main
from ctxcache.demo.common import NAMESPACE, DemoError

__all__ = ["NAMESPACE", "DemoError", "demo_broker", "main"]
