#!/bin/bash
# facerec worker boot script: the user-data of the `${ID}-worker` launch template.
# `facerec infra up --ami AMI` renders it: the placeholder between the FACEREC_ENV markers
# below becomes the worker's settings, one KEY=VALUE per line (ID, AWS_REGION,
# MAX_RETRIES, VISIBILITY_TIMEOUT, FACEREC_MODELS, ... and every `--worker-env KEY=VALUE`).
#
# What the AMI must hold (see README, "Deploy on AWS"):
#   /opt/facerec/bin/facerec   the release binary (`cargo build --release --features gpu`)
#   /opt/facerec/models/       the ONNX models (the repository's models/ directory)
#   an NVIDIA driver with its Vulkan ICD (the wgpu backend; without a GPU adapter the
#   worker falls back to the CPU), systemd and curl. Both paths world-readable.
# Credentials come from the instance profile (the worker role's policy:
# `facerec infra policy --role worker`).
set -euo pipefail

install -d -m 0755 /etc/facerec
cat > /etc/facerec/worker.env <<'FACEREC_ENV'
@FACEREC_WORKER_ENV@
FACEREC_ENV

# The instance id names the worker in its logs (IMDSv2; the template requires tokens).
token=$(curl -sf -X PUT http://169.254.169.254/latest/api/token \
  -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' || true)
instance=$(curl -sf -H "X-aws-ec2-metadata-token: ${token}" \
  http://169.254.169.254/latest/meta-data/instance-id || hostname)
echo "FACEREC_WORKER_NAME=${instance}" >> /etc/facerec/worker.env
# It may hold a secret (DATABASE_URL's password): root reads it for systemd, nobody else.
chmod 0600 /etc/facerec/worker.env

cat > /etc/systemd/system/facerec-worker.service <<'UNIT'
[Unit]
Description=facerec recognition worker
Wants=network-online.target
After=network-online.target

[Service]
EnvironmentFile=/etc/facerec/worker.env
ExecStart=/opt/facerec/bin/facerec worker
WorkingDirectory=/opt/facerec
DynamicUser=yes
# Converted weights are cached here (FACEREC_CACHE_DIR).
CacheDirectory=facerec
Restart=on-failure
RestartSec=5
# On SIGTERM the worker hands back the messages it holds, then exits.
TimeoutStopSec=60

[Install]
WantedBy=multi-user.target
UNIT

systemctl daemon-reload
systemctl enable --now facerec-worker.service
