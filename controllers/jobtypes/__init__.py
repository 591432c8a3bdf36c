"""The built-in job types; importing this package registers them."""

from controllers.jobtypes import hello_world, noop_fanout, prime_count

__all__ = ["hello_world", "noop_fanout", "prime_count"]
