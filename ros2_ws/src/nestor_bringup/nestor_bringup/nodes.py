"""What runs on a robot: THE single source of truth for the launch files and the `nestor` CLI.

`robot_nodes(spec, config_dir)` lists the processes of one robot, each as a `NodeSpec` with its
per-node defaults file (`config/robot/<node>.yaml`, layout `/**/<node>: ros__parameters:`) and the
per-robot overrides (ids, paths, seed, shifts). Plain data; no launch or rclpy import here.
"""

import dataclasses
import os

import yaml

# Per-robot files live under <run_dir>/robots/<robot_id>/.
SPOOL_FILE = "spool.sqlite"
MODEL_DIR = "models"
RECORDING_FILE = "recording.mcap"

# Supervision (nestor_bringup.supervisor, and respawn=... in the launch files). The network-side
# nodes are restarted when they die: the control loop (sim_bridge -> policy -> commands) does not
# depend on them, and the spool holds the experience meanwhile. A crash of any other node (the
# control path) stops the robot.
RESPAWN_NODES = ("bag_recorder", "perception", "uplink", "weight_sync")
RESPAWN_DELAY_S = 1.0  # first restart delay; it doubles with each crash in a row (the CLI), up to 30 s
RESTART_BUDGET = 5  # restarts of one node (within 10 min for the CLI, in total for ros2 launch)
# Seconds a node gets to exit after SIGINT before SIGKILL; the uplink adds its drain_timeout_s.
STOP_TIMEOUT_S = 10.0
# Lifecycle (managed) nodes: the ones that own a resource (nestor_core.lifecycle). They start with
# autostart:=false, and the bringup (`nestor`, nestor_bringup.lifecycle; the launch files, through
# launch_ros) configures then activates each one, again after every respawn; on stop it
# deactivates and cleans them up before SIGINT.
LIFECYCLE_NODES = ("sim_bridge", "policy", "uplink", "weight_sync")
TRANSITION_TIMEOUT_S = 30.0  # one configure or activate (the policy loads and verifies its model)

# Shift schedules the fleet cycles through, one per robot (robot i gets entry i % len).
DEFAULT_FLEET_SHIFTS: list[list[str]] = [
    ["payload:4.0@20"],
    ["friction:2.0@15"],
    ["actuator_gain:0.7@20"],
    ["damping:1.0@10"],
    ["torque_bias:5.0@25"],
]


@dataclasses.dataclass
class RobotSpec:
    """One robot of a run.

    Attributes:
        robot_id: robot id (spool owner, experience label).
        task: task name; selects config/tasks/<task>.yaml and the model lineage.
        task_file: task YAML; empty means <config_dir>/tasks/<task>.yaml.
        namespace: ROS namespace of all the robot's nodes; empty means robot_id.
        cloud_address: host:port of the cloud brain (experience and model services).
        run_dir: run directory; the robot writes under <run_dir>/robots/<robot_id>/.
        seed: sim seed.
        shifts: dynamics shifts for the sim, e.g. ["payload:4.0@20"]; empty keeps the task's own.
        camera: whether the target comes from the camera (adds perception); None reads the task file.
        initial_model: optional local .onnx the policy starts with (otherwise it waits for weight_sync).
        sim: run the simulator bridge as part of the robot (False on hardware).
        certs_dir: directory made by `nestor-cloud certs`: when set, the uplink and weight sync
            use mutual TLS with <robot_id>.pem/.key and ca.pem, and the weight sync and policy
            accept only models signed by model_signing.pub.pem. Empty = insecure (loopback only).
        params_files: the user's own ROS params files, applied after each node's defaults file and
            before the per-robot overrides (ids, paths, seed, shifts and certificates win).
        record: also run the bag recorder, which records the robot's topics to
            <robot_dir>/recording.mcap in its own process.
    """

    robot_id: str
    task: str = "kuka_track"
    task_file: str = ""
    namespace: str = ""
    cloud_address: str = "127.0.0.1:50051"
    run_dir: str = "runs/latest"
    seed: int = 0
    shifts: list[str] = dataclasses.field(default_factory=list)
    camera: bool | None = None
    initial_model: str = ""
    sim: bool = True
    certs_dir: str = ""
    params_files: list[str] = dataclasses.field(default_factory=list)
    record: bool = False

    @property
    def ns(self) -> str:
        return self.namespace or self.robot_id

    @property
    def robot_dir(self) -> str:
        return os.path.join(self.run_dir, "robots", self.robot_id)


@dataclasses.dataclass
class NodeSpec:
    """One node process.

    Attributes:
        package: ROS package (and Python distribution) providing the executable.
        executable: console script name.
        name: node name (matches the `/**/<name>` key of its defaults file).
        namespace: ROS namespace without the leading slash.
        param_files: parameter files, applied in order.
        overrides: per-robot parameters, applied last.
        respawn: restart the node when it dies (network side); False = its death stops the robot.
        respawn_delay: seconds before the first restart.
        respawn_max_retries: restart budget (see RESTART_BUDGET).
        stop_timeout_s: seconds it gets to exit after SIGINT/SIGTERM before SIGKILL (and, for a
            lifecycle node, to deactivate and clean up before that).
        lifecycle: a lifecycle node (LIFECYCLE_NODES): configured and activated after it starts.
    """

    package: str
    executable: str
    name: str
    namespace: str
    param_files: list[str]
    overrides: dict
    respawn: bool = False
    respawn_delay: float = RESPAWN_DELAY_S
    respawn_max_retries: int = RESTART_BUDGET
    stop_timeout_s: float = STOP_TIMEOUT_S
    lifecycle: bool = False

    @property
    def full_name(self) -> str:
        """The node's fully qualified name, e.g. /robot0/policy."""
        ns = self.namespace.strip("/")
        return f"/{ns}/{self.name}" if ns else f"/{self.name}"

    def parameter(self, name: str, default=None):
        """The value `name` gets: the overrides, else the last param file that sets it, else default."""
        if name in self.overrides:
            return self.overrides[name]
        value = default
        for path in self.param_files:
            try:
                with open(path) as f:
                    doc = yaml.safe_load(f) or {}
            except OSError:
                continue
            for key, section in doc.items():
                params = (section or {}).get("ros__parameters", {}) if isinstance(section, dict) else {}
                if key.rstrip("/").endswith(f"/{self.name}") and name in params:
                    value = params[name]
        return value


def task_file_for(spec: RobotSpec, config_dir: str) -> str:
    return os.path.abspath(spec.task_file or os.path.join(config_dir, "tasks", f"{spec.task}.yaml"))


def _task_camera(task_file: str):
    """The task's camera section (nestor_sim.task.CameraSpec), read by the one task-file parser."""
    from nestor_sim.task import load_task

    return load_task(task_file).camera


def task_uses_camera(task_file: str) -> bool:
    """True when the task's target comes from the camera (its `camera.enabled`)."""
    return _task_camera(task_file).enabled


def perception_params(task_file: str) -> dict:
    """The perception node's calibration parameters, copied from the task's camera section.

    The task file stays the single source of truth; the robot-side node never parses YAML.
    """
    camera = _task_camera(task_file)
    return {
        "image_width": int(camera.width),
        "image_height": int(camera.height),
        "fov_deg": float(camera.fov_deg),
        "distance": float(camera.distance),
        "center_x": float(camera.center_x),
    }


def _node(spec: RobotSpec, config_dir: str, package: str, executable: str, name: str, **overrides) -> NodeSpec:
    # An empty list has no ROS parameter type in a params file; leaving it out keeps the default.
    overrides = {k: v for k, v in overrides.items() if not (isinstance(v, list) and not v)}
    lifecycle = name in LIFECYCLE_NODES
    if lifecycle:
        overrides["autostart"] = False  # the bringup drives its transitions
    node = NodeSpec(
        package=package,
        executable=executable,
        name=name,
        namespace=spec.ns,
        param_files=[
            os.path.join(os.path.abspath(config_dir), "robot", f"{name}.yaml"),
            *(os.path.abspath(p) for p in spec.params_files),
        ],
        overrides=overrides,
        respawn=name in RESPAWN_NODES,
        lifecycle=lifecycle,
    )
    if name == "uplink":  # it drains the spool before it exits
        node.stop_timeout_s = STOP_TIMEOUT_S + float(node.parameter("drain_timeout_s", 0.0))
    return node


def robot_nodes(spec: RobotSpec, config_dir: str) -> list[NodeSpec]:
    """The node processes of one robot, in start order."""
    task_file = task_file_for(spec, config_dir)
    camera = task_uses_camera(task_file) if spec.camera is None else spec.camera
    robot_dir = os.path.abspath(spec.robot_dir)
    spool = os.path.join(robot_dir, SPOOL_FILE)
    nodes = []
    if spec.record:  # first, so the bag covers the robot's whole run
        nodes.append(
            _node(
                spec,
                config_dir,
                "nestor_robot",
                "bag_recorder",
                "bag_recorder",
                robot_id=spec.robot_id,
                path=os.path.join(robot_dir, RECORDING_FILE),
            )
        )
    if spec.sim:
        nodes.append(
            _node(
                spec,
                config_dir,
                "nestor_sim",
                "sim_bridge",
                "sim_bridge",
                task_file=task_file,
                robot_id=spec.robot_id,
                seed=int(spec.seed),
                shifts=list(spec.shifts),
                run_dir=robot_dir,
                publish_target=not camera,
                camera_enabled=camera,
            )
        )
    if camera:
        nodes.append(
            _node(spec, config_dir, "nestor_robot", "perception_node", "perception", **perception_params(task_file))
        )
    policy = {"robot_id": spec.robot_id, "task": spec.task, "spool_path": spool, "run_dir": robot_dir}
    if spec.initial_model:
        policy["initial_model"] = os.path.abspath(spec.initial_model)
    tls, signer = security_params(spec)
    nodes += [
        _node(spec, config_dir, "nestor_robot", "policy_node", "policy", **policy, **signer),
        _node(
            spec,
            config_dir,
            "nestor_robot",
            "uplink_node",
            "uplink",
            robot_id=spec.robot_id,
            spool_path=spool,
            cloud_address=spec.cloud_address,
            run_dir=robot_dir,
            **tls,
        ),
        _node(
            spec,
            config_dir,
            "nestor_robot",
            "weight_sync_node",
            "weight_sync",
            robot_id=spec.robot_id,
            task=spec.task,
            cloud_address=spec.cloud_address,
            model_dir=os.path.join(robot_dir, MODEL_DIR),
            **tls,
            **signer,
        ),
    ]
    return nodes


def security_params(spec: RobotSpec) -> tuple[dict, dict]:
    """(TLS parameters, model-signer parameters) of a robot; both empty when certs_dir is unset."""
    if not spec.certs_dir:
        return {}, {}
    certs = os.path.abspath(spec.certs_dir)
    tls = {
        "tls_ca": os.path.join(certs, "ca.pem"),
        "tls_cert": os.path.join(certs, f"{spec.robot_id}.pem"),
        "tls_key": os.path.join(certs, f"{spec.robot_id}.key"),
    }
    return tls, {"public_key_path": os.path.join(certs, "model_signing.pub.pem")}


def overrides_yaml(nodes: list[NodeSpec]) -> str:
    """A ROS params file holding every node's overrides, keyed by its full name."""
    doc = {n.full_name: {"ros__parameters": n.overrides} for n in nodes}
    return yaml.safe_dump(doc, sort_keys=False)


def fleet_specs(
    robots: int,
    task: str,
    run_dir: str,
    cloud: str,
    seed: int = 0,
    task_file: str = "",
    initial_model: str = "",
    sim: bool = True,
    shifts: list[list[str]] | None = None,
    namespace: str = "",
    params_files: list[str] | None = None,
    record: bool = False,
) -> list[RobotSpec]:
    """robot0..robotN-1, namespaces = ids (under `namespace` when set), seeds seed+i, shifts cycling."""
    cycle = shifts or DEFAULT_FLEET_SHIFTS
    prefix = namespace.strip("/")
    return [
        RobotSpec(
            robot_id=f"robot{i}",
            task=task,
            task_file=task_file,
            cloud_address=cloud,
            run_dir=run_dir,
            seed=seed + i,
            shifts=list(cycle[i % len(cycle)]),
            initial_model=initial_model,
            sim=sim,
            namespace=f"{prefix}/robot{i}" if prefix else "",
            params_files=list(params_files or []),
            record=record,
        )
        for i in range(robots)
    ]


def check_params_file(path: str) -> str | None:
    """Why a user's params file cannot be used (None when it can): exists, YAML, ROS params layout."""
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except OSError as err:
        return f"cannot read {path}: {err.strerror}"
    except yaml.YAMLError as err:
        return f"{path} is not valid YAML: {str(err).splitlines()[0]}"
    if not isinstance(doc, dict) or not doc:
        return f"{path} must map node names to {{ros__parameters: ...}}"
    for node, body in doc.items():
        if not isinstance(body, dict) or not isinstance(body.get("ros__parameters"), dict):
            return f"{path}: {node}: expected a 'ros__parameters' mapping"
    return None
