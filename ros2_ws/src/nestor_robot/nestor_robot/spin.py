"""The `main` of the plain-spinning nodes (uplink, weight_sync, perception): build, spin, shut down cleanly."""

import logging
import os
import sys

import rclpy
from rclpy.executors import ExternalShutdownException


def run_node(make_node, args=None) -> None:
    """Spin the node `make_node()` builds until Ctrl-C or shutdown; then `node.shutdown()`.

    A node that refuses its configuration while it is built (ValueError or OSError, ConfigError among them)
    prints one line `<program>: error: <message>` and exits with code 2, without a traceback.
    """
    # The plain-logic modules log through `logging`; show their warnings and drops.
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = make_node()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, OSError) as err:  # ConfigError among them
        if node is not None:
            raise
        print(f"{os.path.basename(sys.argv[0])}: error: {err}", file=sys.stderr, flush=True)
        code = 2
    finally:
        if node is not None:
            if hasattr(node, "shutdown"):
                node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    if code:
        sys.exit(code)
