# syntax=docker/dockerfile:1
# Netmon server image (multi-stage): the same image runs a replica (`netmon serve`), the
# analysis worker (`netmon analyze`) and the archive manager (`netmon archive run`).
# No secret is baked in: they come from the environment (.env, see .env.example).

# --- 1. Python dependencies and the netmon package, in a virtualenv -------------------------
FROM python:3.11-slim-bookworm AS python-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/netmon
WORKDIR /src
# Dependencies first (a layer that changes only when pyproject.toml does).
COPY pyproject.toml README.md LICENSE ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['server']))" > /tmp/requirements.txt \
    && /opt/netmon/bin/pip install -r /tmp/requirements.txt
COPY app ./app
COPY agent ./agent
COPY storage ./storage
COPY archive ./archive
COPY web ./web
RUN /opt/netmon/bin/pip install --no-deps .

# --- 2. The pinned front-end files (htmx, uPlot) exactly as package-lock.json says ----------
FROM node:20-bookworm-slim AS web-build
WORKDIR /web
COPY web/package.json web/package-lock.json ./
# --ignore-scripts: only dist files are needed; no install script (e.g. telemetry) may run.
RUN npm ci --no-audit --no-fund --omit=dev --ignore-scripts

# --- 3. Runtime: no compilers, no npm, an unprivileged user ---------------------------------
FROM python:3.11-slim-bookworm AS runtime
RUN useradd --system --uid 10001 --home-dir /data netmon \
    && mkdir -p /data && chown netmon:netmon /data
COPY --from=python-build /opt/netmon /opt/netmon
COPY --from=web-build /web/node_modules /opt/netmon/lib/python3.11/site-packages/netmon/web/node_modules
ENV PATH=/opt/netmon/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NETMON_STORE__DATA_DIR=/data \
    NETMON_SERVER__HOST=0.0.0.0 \
    NETMON_SERVER__PORT=8080
USER netmon
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"
ENTRYPOINT ["netmon"]
CMD ["serve"]
