"""The bare rclpy loop the ROS figure is compared with: JointState out, Float64MultiArray back.

    python -m bench.ros_pingpong ping --ns /pp --schedule 100:5,250:5,500:5 --windows-file W
    python -m bench.ros_pingpong echo --ns /pp --times-file T --max-seconds S

`ping` plays the sim bridge (a wall timer publishing a 7-joint JointState with a header stamp,
SENSOR_QOS; it subscribes to the commands) through the rate schedule, then writes the windows
(rate, start, end wall time) and exits. `echo` plays the policy node: it answers every JointState
with a 7-value Float64MultiArray (COMMAND_QOS) and records the wall time of every callback, written
to --times-file when it stops (SIGINT/SIGTERM or --max-seconds). Same QoS and topics as the nodes.
"""

from __future__ import annotations

import argparse
import json
import signal
import time

import numpy as np

JOINTS = [f"lbr_iiwa_joint_{i}" for i in range(1, 8)]
SETTLE_S = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["ping", "echo"])
    parser.add_argument("--ns", default="/pp")
    parser.add_argument("--schedule", default="250:5")
    parser.add_argument("--windows-file", default="")
    parser.add_argument("--times-file", default="")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args()

    import rclpy
    from nestor_core import topics
    from nestor_core.qos import COMMAND_QOS, SENSOR_QOS
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    stop = {"flag": False}

    def _stop(*_):
        stop["flag"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = Node(f"pingpong_{args.role}", namespace=args.ns)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    deadline = time.monotonic() + args.max_seconds
    try:
        if args.role == "echo":
            pub = node.create_publisher(Float64MultiArray, topics.COMMANDS, COMMAND_QOS)
            times = np.zeros(400_000, np.float64)
            count = [0]
            cmd = Float64MultiArray()

            def on_state(msg):
                now = time.time()
                q = np.frombuffer(msg.position, np.float64)
                cmd.data = (q * 0.0).tolist()
                pub.publish(cmd)
                if count[0] < times.shape[0]:
                    times[count[0]] = now
                    count[0] += 1

            node.create_subscription(JointState, topics.JOINT_STATES, on_state, SENSOR_QOS)
            while not stop["flag"] and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
            if args.times_file:
                np.save(args.times_file, times[: count[0]])
        else:
            pub = node.create_publisher(JointState, topics.JOINT_STATES, SENSOR_QOS)
            node.create_subscription(Float64MultiArray, topics.COMMANDS, lambda msg: None, COMMAND_QOS)
            msg = JointState(name=list(JOINTS))
            q = np.linspace(0.0, 1.0, len(JOINTS))

            def tick():
                msg.header.stamp = node.get_clock().now().to_msg()
                msg.position, msg.velocity, msg.effort = q.tolist(), q.tolist(), q.tolist()
                pub.publish(msg)

            windows = []
            time.sleep(SETTLE_S)  # discovery
            for item in args.schedule.split(","):
                rate, seconds = (float(x) for x in item.split(":"))
                timer = node.create_timer(1.0 / rate, tick)
                start = time.time()
                end_at = time.monotonic() + seconds
                while not stop["flag"] and time.monotonic() < min(end_at, deadline):
                    executor.spin_once(timeout_sec=0.05)
                windows.append({"rate": rate, "start": start, "end": time.time()})
                node.destroy_timer(timer)
                pause = time.monotonic() + SETTLE_S
                while time.monotonic() < pause:
                    executor.spin_once(timeout_sec=0.05)
            if args.windows_file:
                with open(args.windows_file, "w") as f:
                    json.dump({"windows": windows}, f)
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
