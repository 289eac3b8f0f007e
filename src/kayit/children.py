"""Node processes that die with the process that started them, however it dies.

``kayit cluster`` and the chaos run start ``kayit node`` processes; if either is killed (even
by SIGKILL, which it cannot catch to stop them), its nodes must not run on as orphans holding
its ports. setpriv (util-linux) asks the kernel to send the node SIGKILL when its parent dies
(PR_SET_PDEATHSIG), then execs the node, keeping its PID, so signals sent to it reach the node.

Not a preexec_fn: the parent's own gRPC calls run meanwhile, and a child that runs Python code
between fork and exec runs gRPC's fork handlers too, which start a poller that dies on the fds
closed before exec and abort the child (grpc/grpc#43055); without one, the child is spawned by
vfork. The kernel sends the signal when the parent *thread* that forked the child exits: spawn
them from the event loop's thread, never from a worker thread.
"""

from __future__ import annotations

import shutil

SETPRIV = "setpriv"
_DIE_WITH_PARENT = [SETPRIV, "--pdeathsig", "KILL"]


def can_die_with_parent() -> bool:
    """Whether setpriv is here to tie children to this process."""
    return shutil.which(SETPRIV) is not None


def dying_with_parent(argv: list[str]) -> list[str]:
    """The command line that runs ``argv`` as a child killed when this process dies."""
    return [*_DIE_WITH_PARENT, *argv]
