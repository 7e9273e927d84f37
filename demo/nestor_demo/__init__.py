"""nestor_demo: `nestor demo`, its report and the stall probe.

The one package that imports both the robot side (nestor_bringup, nestor_robot, nestor_sim) and the
cloud (cloud_brain); nothing imports it.
"""
