"""The `main` of the plain-spinning nodes: build, spin, shut down cleanly.

Used by uplink, weight_sync, perception and bag_recorder.
"""

import logging
import os
import sys

import rclpy
from nestor_core.lifecycle import ManagedNode, TransitionRefused
from rclpy.executors import ExternalShutdownException


def run_node(make_node, args=None) -> None:
    """Spin the node `make_node()` builds until Ctrl-C or shutdown, then shut it down.

    That is `node.shutdown()` (a plain node) or `node.teardown()` (a lifecycle node: deactivate and
    clean up, whatever its state).

    A lifecycle node with `autostart` (the default) configures and activates itself first; with
    `autostart:=false` it waits, unconfigured, for its transitions (nestor_core.lifecycle).
    A node that refuses its configuration while it is built or configured (ValueError or OSError,
    ConfigError among them) prints one line `<program>: error: <message>` and exits with code 2,
    without a traceback.
    """
    # The plain-logic modules log through `logging`; show their warnings and drops.
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = make_node()
        if isinstance(node, ManagedNode):
            node.start_alone()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, OSError, TransitionRefused) as err:  # ConfigError among them
        if node is not None and not (isinstance(node, ManagedNode) and node.stage == "unconfigured"):
            raise  # not a refusal at start: a bug, with its traceback
        print(f"{os.path.basename(sys.argv[0])}: error: {err}", file=sys.stderr, flush=True)
        code = 2
    finally:
        if node is not None:
            if isinstance(node, ManagedNode):
                node.teardown()
            elif hasattr(node, "shutdown"):
                node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    if code:
        sys.exit(code)
