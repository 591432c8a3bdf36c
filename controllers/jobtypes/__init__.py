"""The built-in job types; importing this package registers them.

noop_fanout can ask for 10 stages of 100,000 sleeping tasks in one request: it is
registered only where LIGHTSOUT_SELFTEST_JOB_TYPES=true (tests, benchmarks, the demo).
"""

from controllers.jobtypes import hello_world, noop_fanout, prime_count
from controllers.registry import register
from schemas.settings import env_flag

if env_flag("LIGHTSOUT_SELFTEST_JOB_TYPES"):
    register(noop_fanout.NoopFanout)

__all__ = ["hello_world", "noop_fanout", "prime_count"]
