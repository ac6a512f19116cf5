"""A small client of Prometheus' HTTP API, and Debian's prometheus binary run on loopback.

    with running_prometheus(workdir, scrape_config("127.0.0.1:40123", "1s")) as api:
        api.wait_for_scrapes("observe-rt", 10)
        api.query('sum by (state) (observe_rt_containers)')   # [{"metric": {...}, "value": ...}]

The scrape config is deploy/prometheus/prometheus.yml with its target and interval replaced, so
the file operators install is the file the dashboards check runs.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from observe_rt.bench.registry import free_port

PROMETHEUS_BIN = "/usr/bin/prometheus"
SCRAPE_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "prometheus.yml"
DEFAULT_TARGET = '"127.0.0.1:9464"'
DEFAULT_INTERVAL = "scrape_interval: 15s"


class PromQLError(RuntimeError):
    """Prometheus refused a query (bad syntax, unknown function, ...) or could not be reached."""


class PrometheusAPI:
    def __init__(self, url: str, timeout: float = 30) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, **params):
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None}, True)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=self.timeout) as r:
                body = json.load(r)
        except urllib.error.HTTPError as err:  # 400/422 carry Prometheus' own error message
            try:
                body = json.load(err)
            except ValueError:
                raise PromQLError(f"{path}: HTTP {err.code}") from None
        except (OSError, ValueError) as err:
            raise PromQLError(f"{self.url}{path}: {err}") from None
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType', 'error')}: {body.get('error', body)}")
        return body["data"]

    @staticmethod
    def _series(data) -> list[dict]:
        """Vector and matrix results as they are; a scalar becomes one series without labels."""
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        return self._series(self._get("/api/v1/query", query=expr, time=at))

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        data = self._get("/api/v1/query_range", query=expr, start=start, end=end, step=step)
        return self._series(data)

    def label_values(self, label: str, match: str | None = None, start=None, end=None) -> list:
        return self._get(f"/api/v1/label/{label}/values", **{"match[]": match},
                         start=start, end=end)  # fmt: skip

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_for_scrapes(self, job: str, count: int, timeout: float = 120) -> None:
        """Until the job's targets are up and were scraped at least `count` times."""
        expr = f'min(count_over_time(up{{job="{job}"}}[1h])) and min(up{{job="{job}"}}) == 1'
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result and float(result[0]["value"][1]) >= count:
                return
            if time.monotonic() > deadline:
                targets = self._get("/api/v1/targets")
                raise PromQLError(f"job {job}: fewer than {count} good scrapes; {targets}")
            time.sleep(1)


def scrape_config(target: str, interval: str, template: Path = SCRAPE_CONFIG) -> str:
    """The deploy scrape config pointed at `target` ("host:port") every `interval`."""
    text = template.read_text()
    for old in (DEFAULT_TARGET, DEFAULT_INTERVAL):
        if text.count(old) != 1:
            raise ValueError(f"{template}: expected exactly one {old!r} to replace")
    text = text.replace(DEFAULT_TARGET, json.dumps(target))
    return text.replace(DEFAULT_INTERVAL, f"scrape_interval: {interval}")


@contextlib.contextmanager
def running_prometheus(workdir: Path, config: str, binary: str = PROMETHEUS_BIN):
    """Prometheus on 127.0.0.1 with its own config and data dir under `workdir`."""
    if not shutil.which(binary):
        raise FileNotFoundError(f"{binary} not found: apt-get install prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(config)
    port = free_port()
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(
        [binary, f"--config.file={workdir / 'prometheus.yml'}",
         f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--storage.tsdb.retention.time=1d", "--log.level=warn"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )  # fmt: skip
    api = PrometheusAPI(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while not api.ready():
            if process.poll() is not None or time.monotonic() > deadline:
                text = (workdir / "prometheus.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"prometheus did not become ready: {text}")
            time.sleep(0.2)
        yield api
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
