"""Everything that touches Ethereum: Livepeer tickets, redemption, rewards and staking."""

import contextlib
import sys

# py_ecc (imported by eth_account) raises the interpreter's recursion limit to 100,000.
# C code that recurses, json.loads of a deeply nested request body among it, then runs off
# the thread's stack and kills the process instead of raising RecursionError. Import it
# first, here, and put the limit back: nothing this package calls recurses that deep.
_limit = sys.getrecursionlimit()
with contextlib.suppress(ImportError):  # only eth_account's dependencies bring it
    import py_ecc  # noqa: F401
sys.setrecursionlimit(_limit)

__all__: list[str] = []
