#!/bin/bash
# Vast.ai on-start script for a transient-pool MuseTalk worker.
# Fill in the four secrets below (or set them in the instance's environment
# and drop the lines). Unlike the Python image, this worker needs no enlarged
# /dev/shm: it keeps no tensors in shared memory. --stop-timeout gives a
# draining job the worker's 25 s grace before Docker kills it.
docker run -d --gpus all --rm --network host --stop-timeout 30 \
  --name musetalk-worker \
  -e WORKER_ID="vast-${VAST_CONTAINERLABEL}" \
  -e WORKER_TYPE=transient \
  -e PROVIDER=vast \
  -e GPU_CLASS_NAME=RTX_4090 \
  -e ORCHESTRATOR_BASE_URL=https://orch.avatargen.online \
  -e INTERNAL_API_KEY=YOUR_KEY_HERE \
  -e B2_KEY_ID=YOUR_KEY_ID \
  -e B2_APP_KEY=YOUR_APP_KEY \
  -e B2_BUCKET_NAME=talking-avatar \
  -e POLL_INTERVAL_SEC=5 \
  explaindio/musetalk-worker:unified-v2 musetalk worker
