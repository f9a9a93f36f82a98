# One image for the fray controller and its workers (docs/deployment.md, "Containers").
#
#   docker build -t fray .
#   docker run -d --name fray-controller --network host --restart on-failure \
#       -e FRAY_TOKEN -v fray-state:/var/lib/fray fray
#   docker run -d --name fray-worker --network host --restart always --stop-timeout 45 \
#       --shm-size 2g -e FRAY_TOKEN fray worker --controller http://CONTROLLER_HOST:7625 \
#       --host 0.0.0.0 --port 7626 --advertise-host WORKER_HOST --concurrency 4
#
# BASE_IMAGE: any Debian-based image with Python >= 3.11 and its venv module on PATH as python3.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/lock.txt requirements/lock.txt
COPY src src
# fray and its runtime dependencies only (not the dev and ray extras), at the versions of the
# lock file: its pins, without the hashes, constrain pip's resolution.
RUN sed -e '/--hash=/d' -e 's/ *\\$//' requirements/lock.txt > /tmp/constraints.txt \
    && python3 -m venv /opt/fray \
    && /opt/fray/bin/pip install --no-cache-dir --constraint /tmp/constraints.txt . \
    && /opt/fray/bin/fray --version

FROM ${BASE_IMAGE}
COPY --from=build /opt/fray /opt/fray
# An unprivileged user; the controller's state (SQLite file + blobs, private to this user)
# lives in its home, /var/lib/fray: mount a volume there.
RUN groupadd --system --gid 10001 fray \
    && useradd --system --uid 10001 --gid fray --home-dir /var/lib/fray --shell /usr/sbin/nologin fray \
    && install -d -m 0700 -o fray -g fray /var/lib/fray
USER 10001:10001
WORKDIR /var/lib/fray
ENV PATH=/opt/fray/bin:$PATH \
    XDG_STATE_HOME=/var/lib/fray \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/fray"]
EXPOSE 7625
ENTRYPOINT ["fray"]
# The controller on every interface of the container (so it needs $FRAY_TOKEN), its state in the
# volume. `docker run ... fray worker ...` runs a worker instead.
CMD ["controller", "--host", "0.0.0.0", "--port", "7625", "--state", "/var/lib/fray/controller.db"]
