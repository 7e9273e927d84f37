"""The `main` of the network nodes (uplink, weight_sync): build, spin, shut down cleanly."""

import logging

import rclpy
from rclpy.executors import ExternalShutdownException


def run_node(make_node, args=None) -> None:
    """Spin the node `make_node()` builds until Ctrl-C or shutdown; then `node.shutdown()`."""
    # The plain-logic modules log through `logging`; show their warnings and drops.
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
