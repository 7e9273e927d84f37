"""The policy node's process: its own signal handling, the executor and the shutdown order.

The executor stops on SIGINT/SIGTERM and finishes its in-flight tick while the context is still
valid; then the node is torn down (the recorder is flushed into the spool) and rclpy shuts down.
A configuration error before the node is configured exits with code 2 and a one-line message.
"""

import signal
import sys

import rclpy
from nestor_core.executors import make_executor, spin
from nestor_core.realtime import freeze_heap
from rclpy.executors import ExternalShutdownException
from rclpy.signals import SignalHandlerOptions


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_policy_process(node_class, args=None) -> None:
    """Run `node_class` (PolicyNode) in this process until SIGINT/SIGTERM; exit 2 on a config error."""
    # Our own SIGINT/SIGTERM handling: the executor stops and finishes its in-flight tick while the
    # context is still valid; then the recorder is flushed into the spool and rclpy shuts down.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    node = executor = None
    code = 0
    try:
        node = node_class()
        executor = make_executor(node.executor_kind)
        node.start_alone()  # with autostart (the default); else it waits for `configure`
        freeze_heap()
        executor.add_node(node)
        spin(executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, OSError) as err:  # ConfigError among them
        if node is not None and node.stage != "unconfigured":
            raise
        print(f"policy_node: error: {err}", file=sys.stderr, flush=True)
        code = 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        if node is not None:
            node.teardown()
            node.destroy_node()
        rclpy.try_shutdown()
    if code:
        sys.exit(code)
