# syntax=docker/dockerfile:1
# nestor cloud slow brain: `nestor-cloud serve` (gRPC ingest, model registry, consolidation).
#
#   docker build -f docker/cloud_brain.Dockerfile -t nestor-cloud-brain .      (context: repo root)
#   docker run --rm -v nestor_cloud:/app/runs/cloud nestor-cloud-brain
#
# Without TLS the server only binds loopback (insecure dev mode, CloudConfig.validate), which is what
# the image's default CMD does. Serving other containers on 0.0.0.0:50051 needs mutual TLS:
#   serve --address 0.0.0.0:50051 --certs /certs       (server.pem/.key, ca.pem, model_signing.pem)
# docker-compose.yml does that, with /certs filled by its one-shot `certs` service (same image:
# `nestor-cloud certs --out /pki --server-host cloud_brain --bundles`).
#
# Relative paths in config/cloud.yaml (db_path, model_dir, task_files) resolve against WORKDIR /app,
# so the database and exported models land in /app/runs/cloud: mount a volume there.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Third-party dependencies first (own layer, cached across source edits), at requirements.txt's pins.
# torch comes from the CPU index: the default index resolves the same pin to the CUDA build. The rest
# of requirements.txt minus what only the robot, the tests or the linter need (the ROS 2 wheels,
# OpenCV, matplotlib, pytest, ...); pip sees torch==2.13.0 as already satisfied by 2.13.0+cpu.
COPY requirements.txt /tmp/requirements.txt
RUN pip install "setuptools==80.9.0" "wheel==0.45.1" \
 && pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
 && grep -vE '^(ros-|opencv-|matplotlib|pytest|hypothesis|ruff|jsonschema|grpcio-tools)' /tmp/requirements.txt \
      > /tmp/cloud-requirements.txt \
 && pip install -r /tmp/cloud-requirements.txt

# The cloud imports nestor_core (proto stubs, domain types) and nestor_sim (task files, evaluation
# episodes); neither pulls rclpy on those import paths.
COPY ros2_ws/src/nestor_core ros2_ws/src/nestor_core
COPY sim sim
COPY cloud_brain cloud_brain
COPY config config
RUN pip install --no-deps --no-build-isolation ./ros2_ws/src/nestor_core ./sim ./cloud_brain

# Unprivileged.
# Fresh named volumes mounted on /app/runs/cloud and /pki inherit this ownership; /certs is the
# read-only mount point of the cloud's certificate bundle.
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin nestor \
 && mkdir -p /app/runs/cloud /pki /certs \
 && chown -R nestor /app/runs /pki
USER nestor

EXPOSE 50051
# SIGTERM drains in-flight RPCs for grace_seconds (config/cloud.yaml) before exiting.
STOPSIGNAL SIGTERM
ENTRYPOINT ["nestor-cloud"]
CMD ["serve", "--config", "/app/config/cloud.yaml", "--address", "127.0.0.1:50051"]
