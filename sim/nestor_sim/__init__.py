"""nestor simulation: PyBullet tracking tasks, dynamics shifts, camera and the ROS 2 bridge.

Only ``bridge_node`` imports rclpy; the rest is plain Python, numpy and pybullet. Importing the
package registers the gymnasium ids (``nestor/KukaTrack-v0``, ``nestor/Crane-v0``,
``nestor/Track-v0``; see ``nestor_sim.register``).
"""

from nestor_sim.register import register_envs

register_envs()
