"""Topic names shared by every node, relative so that a robot's namespace applies.

Message types (standard ROS 2 messages only):
    JOINT_STATES   sensor_msgs/JointState       sim_bridge -> policy   (controlled + passive joints)
    TARGET         sensor_msgs/JointState       sim_bridge or perception -> policy (reference of
                                                controlled joints: position and velocity)
    COMMANDS       std_msgs/Float64MultiArray   policy -> sim_bridge   (effort, ros2_control
                                                forward_command_controller convention)
    COST           std_msgs/Float64             sim_bridge -> policy   (task cost of the tick)
    IMAGE          sensor_msgs/Image            sim_bridge -> perception (rgb8)
    SIM_EVENTS     std_msgs/String (JSON)       sim_bridge -> anyone   (dynamics shifts)
    MODEL_UPDATE   std_msgs/String (JSON)       weight_sync -> policy  ({"version","path","sha256",...})
    POLICY_STATUS  diagnostic_msgs/DiagnosticArray policy -> anyone (model version, swaps, missed ticks)
    POLICY_ROLLBACK std_msgs/String (JSON)      policy -> weight_sync ({"robot_id","task","version",
                                                "reverted_to","reason",...}; forwarded as Models.ReportBad)
    DIAGNOSTICS    diagnostic_msgs/DiagnosticArray every node -> diagnostic_aggregator (ABSOLUTE: one
                                                topic for all robots; hardware_id = robot id)
"""

JOINT_STATES = "joint_states"
TARGET = "target"
COMMANDS = "effort_controller/commands"
COST = "cost"
IMAGE = "camera/image_raw"
SIM_EVENTS = "sim/events"
MODEL_UPDATE = "model_update"
POLICY_STATUS = "policy/status"
POLICY_ROLLBACK = "policy/rollback"
DIAGNOSTICS = "/diagnostics"
