# syntax=docker/dockerfile:1
# One simulated nestor robot: the sim bridge plus the robot's nodes on ROS 2 Kilted, built with colcon.
#
#   docker build -f docker/robot.Dockerfile -t nestor-robot .                  (context: repo root)
#   docker run --rm -v <bundle>:/certs:ro nestor-robot robot_id:=robot0 cloud:=<host>:50051 certs_dir:=/certs
#
# Arguments after the image name are launch arguments of launch/sim_robot.launch.py. certs_dir holds
# ca.pem, <robot_id>.pem/.key and model_signing.pub.pem (`nestor-cloud certs --bundles` writes one
# such directory per robot); without it the robot dials the cloud insecurely (loopback dev only).
FROM ros:kilted-ros-base

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST

WORKDIR /ws

# Python dependencies without a usable rosdep key, at requirements.txt's pins. Two things matter here:
# - numpy stays the distribution's build: the ROS message extensions are compiled against it, and a
#   NumPy 2 wheel would break them at import. That is also why OpenCV comes from apt (python3-opencv,
#   the rosdep key nestor_robot declares) and not opencv-python-headless, whose pinned 5.x needs NumPy 2.
# - --ignore-installed: pip cannot uninstall apt-owned packages (no RECORD file), so upgraded
#   dependencies go to /usr/local alongside them instead of replacing them.
COPY requirements.txt /tmp/requirements.txt
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-pip \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -c 'import numpy; print(f"numpy=={numpy.__version__}")' > /tmp/constraints.txt \
 && grep -E '^(onnxruntime|onnx|grpcio|protobuf|pybullet|cryptography|gymnasium|prometheus-client|mcap)==' /tmp/requirements.txt \
      > /tmp/robot-requirements.txt \
 && pip install --ignore-installed -c /tmp/constraints.txt -r /tmp/robot-requirements.txt

# Only what colcon builds and the launch files read; ros2_ws/src/nestor_bringup/{launch,config} are
# symlinks to /ws/launch and /ws/config.
COPY ros2_ws/src ros2_ws/src
COPY sim sim
COPY launch launch
COPY config config

# rosdep installs the remaining exec_depends from package.xml (rclpy, messages, launch_ros, python3-yaml,
# python3-opencv, ...); grpcio, protobuf and prometheus-client were pip-installed above at the project's pins.
# tests/contract/test_robot_image_deps.py checks every import of the robot's modules against these two lists.
RUN source /opt/ros/${ROS_DISTRO}/setup.bash \
 && apt-get update \
 && rosdep install --from-paths ros2_ws/src sim --ignore-src -y --rosdistro "${ROS_DISTRO}" \
      --skip-keys "python3-grpcio python3-protobuf python3-prometheus-client python3-pytest" \
 && rm -rf /var/lib/apt/lists/* \
 && colcon build --base-paths ros2_ws/src sim --symlink-install \
 && rm -rf log

# ros2 launch stops its nodes cleanly on SIGINT.
STOPSIGNAL SIGINT
# Exec form; bash only sources the workspace (which chains /opt/ros/kilted), then becomes ros2 launch,
# so signals reach it directly. CMD / compose `command:` supply the launch arguments.
ENTRYPOINT ["/bin/bash", "-c", "source /ws/install/setup.bash && exec ros2 launch nestor_bringup sim_robot.launch.py \"$@\"", "ros2-launch"]
CMD ["robot_id:=robot0", "cloud:=127.0.0.1:50051"]
