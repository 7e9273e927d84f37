"""The launch files' node actions, in one place: each NodeSpec becomes a launch_ros action.

``robot.launch.py``, ``sim_robot.launch.py`` and ``fleet.launch.py`` declare ``arguments(KIND)``
(nestor_bringup.launch_args) and add ``OpaqueFunction(function=node_actions, args=[KIND])``. The
node list is ``nestor_bringup.nodes.robot_nodes``, as for ``nestor robot`` / ``nestor fleet``.

* A plain node is a ``launch_ros.actions.Node``; a lifecycle node (NodeSpec.lifecycle: the sim
  bridge, policy, uplink, weight_sync, started with ``autostart:=false``) a
  ``launch_ros.actions.LifecycleNode`` with automatic transitions, as the ros2 launch docs do it:
  each time its process starts (and so again after a respawn) a ``ChangeState`` configure is
  emitted, and when it reaches ``inactive`` from ``configuring`` a ``ChangeState`` activate.
* Supervision, as in ``nestor robot`` (nestor_bringup.supervisor): the network side respawns; a
  control-path node that exits shuts the launch down, loudly.

launch and launch_ros are imported inside ``node_actions`` only: this module is read (and its
plain parts tested) where they are not installed.
"""

from __future__ import annotations

import os

from nestor_bringup.launch_args import arguments, specs_from
from nestor_bringup.nodes import NodeSpec, robot_nodes


def node_actions(context, kind: str) -> list:
    """The actions that start every node of the robots a launch file of `kind` describes."""
    from ament_index_python.packages import get_package_share_directory
    from launch.substitutions import LaunchConfiguration

    config_dir = os.path.join(get_package_share_directory("nestor_bringup"), "config")
    values = {name: LaunchConfiguration(name).perform(context) for name in arguments(kind)}
    actions = []
    for spec in specs_from(kind, values):
        for n in robot_nodes(spec, config_dir):
            actions += node_action(n)
    return actions


def node_action(n: NodeSpec) -> list:
    """The launch_ros action(s) of one node: a Node, or a LifecycleNode and its two transitions."""
    from launch.actions import EmitEvent, RegisterEventHandler, Shutdown
    from launch.event_handlers import OnProcessStart
    from launch.events import matches_action
    from launch_ros.actions import LifecycleNode, Node
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    common = dict(
        package=n.package,
        executable=n.executable,
        name=n.name,
        namespace=n.namespace,
        parameters=[*n.param_files, n.overrides],
        output="screen",
        respawn=n.respawn,
        respawn_delay=n.respawn_delay,
        respawn_max_retries=n.respawn_max_retries,
        sigterm_timeout=str(n.stop_timeout_s),
        on_exit=None if n.respawn else Shutdown(reason=f"{n.namespace}/{n.name} exited: control path"),
    )
    if not n.lifecycle:
        return [Node(**common)]
    node = LifecycleNode(**common)

    def change(transition_id: int) -> EmitEvent:
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))

    configure_on_start = RegisterEventHandler(
        OnProcessStart(target_action=node, on_start=[change(Transition.TRANSITION_CONFIGURE)])
    )
    activate_when_configured = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=node,
            start_state="configuring",
            goal_state="inactive",
            entities=[change(Transition.TRANSITION_ACTIVATE)],
        )
    )
    return [configure_on_start, activate_when_configured, node]
