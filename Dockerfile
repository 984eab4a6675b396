# GPU image: the gateway and (optionally) the vLLM engines, on vLLM's official CUDA image.
#
#   docker build -t r1-vs-qwen:0.1.0 .
#   export GATEWAY_API_KEYS=$(openssl rand -hex 32)          # clients send it as a Bearer token
#   docker run --gpus all --shm-size 2g -p 8000:8000 -v model-cache:/models \
#       -e HF_TOKEN -e GATEWAY_API_KEYS r1-vs-qwen:0.1.0   # both engines + gateway, gpu.yaml
#   docker run ... r1-vs-qwen:0.1.0 --config engine_config/gpu-l4.yaml --host 0.0.0.0
#
# compose.yaml and deploy/k8s/ run the same image as separate engine and gateway containers.
# Weights are downloaded at run time into the /models volume (HF_HOME); no token or weights are
# baked in. HF_TOKEN, if needed, comes from the environment.
FROM vllm/vllm-openai:v0.32.0

ENV HF_HOME=/models/hf \
    PYTHONUNBUFFERED=1 \
    UV_NO_CACHE=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1

WORKDIR /app

# The project's pinned dependencies; the base image already has vLLM and torch, and installs
# packages with uv into its system Python, as vLLM's own Dockerfile does.
COPY requirements.txt ./
RUN uv pip install --system -r requirements.txt

# A fixed uid so Kubernetes' runAsUser/fsGroup and volume ownership agree with the image.
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin app \
    && mkdir -p /models/hf /app/logs /app/.cache \
    && chown -R app:app /models /app/logs /app/.cache

COPY server.py ./
COPY gateway/ gateway/
COPY planner/ planner/
COPY engine_config/ engine_config/

USER 10001:10001
VOLUME ["/models"]
EXPOSE 8000

# /ready is 200 only when every engine answers /health: engines load for minutes at first start.
HEALTHCHECK --interval=30s --timeout=5s --start-period=900s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=4)"]

ENTRYPOINT ["python3", "server.py"]
# gpu.yaml binds the gateway to 127.0.0.1 (right on a host); in a container it must listen on all
# interfaces to be reachable through the published port, and so it needs an API key
# (GATEWAY_API_KEYS): without one it refuses to start.
CMD ["--config", "engine_config/gpu.yaml", "--host", "0.0.0.0"]
