"""Real-time scheduling for control processes (the sim bridge and the policy node).

On a robot the control loop runs at a real-time priority so that nothing else on the machine
(the uplink, a consolidation job, logging) can make it miss a tick. `set_sched_priority` moves
every thread of this process, and so every thread it starts later, to SCHED_FIFO. Background
threads (the spool flusher, the model loader) stay at the same priority on purpose: they share
the GIL with the control thread, and a low-priority thread preempted while holding the GIL would
block the control thread (priority inversion). The short GIL switch interval bounds how long
they can hold it. Without the
privilege (CAP_SYS_NICE; a container without it) it changes nothing and says why.
"""

import gc
import os
import sys


def set_sched_priority(priority: int) -> str:
    """Apply SCHED_FIFO `priority` (1-99) to all threads of this process; 0 leaves them alone.

    Returns a one-line description of what happened, for the node's log.
    """
    if priority <= 0:
        return "scheduling: default (sched_priority 0)"
    if priority > 99:
        raise ValueError(f"sched_priority: must be in 0..99, got {priority}")
    param = os.sched_param(priority)
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    try:
        for tid in tids:
            os.sched_setscheduler(tid, os.SCHED_FIFO, param)
    except PermissionError as err:
        return f"scheduling: SCHED_FIFO {priority} not permitted ({err.strerror}); running at default priority"
    except OSError as err:
        return f"scheduling: SCHED_FIFO {priority} failed ({err.strerror}); running at default priority"
    # A thread holding the GIL keeps it up to the switch interval (default 5 ms): half a tick.
    sys.setswitchinterval(0.0005)
    return f"scheduling: SCHED_FIFO priority {priority} on {len(tids)} threads"


def freeze_heap() -> None:
    """Move every object alive now out of the garbage collector's reach (gc.freeze).

    Called once a control node is built: the interpreter, rclpy and the model make hundreds of
    thousands of long-lived objects, and a full collection walking them all stalls the process for
    tens of milliseconds, several control ticks. New objects are still collected as usual.
    """
    gc.collect()
    gc.freeze()
