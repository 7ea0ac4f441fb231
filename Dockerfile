# smlrec: the HTTP service and the retraining worker, CPU only.
#   docker build -t smlrec .
#   docker run -p 127.0.0.1:8000:8000 smlrec            # embedded mode (SQLite, one process)
#   docker compose up                                   # distributed mode (see docker-compose.yml)
# The base image by digest (python:3.11-slim, linux/amd64 and arm64): a rebuild
# gets the same image. To move on: docker pull python:3.11-slim, then put the
# digest `docker image inspect --format '{{index .RepoDigests 0}}' python:3.11-slim`
# shows here.
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The CPU build of torch first (from the PyTorch index), so that installing the
# project does not pull the much larger CUDA build from PyPI; then every other
# dependency at the version requirements.lock pins (`make lock` writes it).
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY requirements.lock .
RUN pip install -r requirements.lock

COPY . .
RUN pip install --no-deps . && rm -rf /app/build

RUN useradd --create-home --uid 10001 smlrec \
    && mkdir -p /data/models \
    && chown -R smlrec:smlrec /data
USER smlrec
WORKDIR /home/smlrec

ENV SMLREC_DATABASE_URL=sqlite:////data/smlrec.db \
    SMLREC_MODEL_DIR=/data/models \
    SMLREC_ADMIN_TOKEN_FILE=/data/admin-token \
    SMLREC_HOST=0.0.0.0 \
    SMLREC_PORT=8000
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"

CMD ["smlrec", "serve", "--host", "0.0.0.0"]
