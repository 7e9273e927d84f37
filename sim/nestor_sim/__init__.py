"""nestor simulation: PyBullet tracking tasks, dynamics shifts, camera and the ROS 2 bridge.

Only ``bridge_node`` imports rclpy; the rest is plain Python, numpy and pybullet.
"""
