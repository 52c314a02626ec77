"""Helpers for the scale-out tests and benchmark: a corpus of real units, a real local Ray
cluster (head + a second node, loopback only) and a throw-away PostgreSQL database.

The shared data hold 387 distinct real units that assay's readers can read (tau-bench airline 200,
AgentRx tau-retail + Magentic-One 167 distinct, Langfuse framework traces 20; DevAI and the
OpenInference samples give none). A corpus larger than that repeats the real units under new ids
(``<unit id>#copy<k>``, every span's trace id replaced by a new one derived from it), so each
unit is real content, stored and scored as a distinct unit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from assay.exceptions import IngestError
from assay.traces import Unit
from assay.traces.readers import expand_paths, read_file

SOURCES = ("tau-bench-airline", "agentrx", "langfuse-framework-traces", "devai-agent-as-a-judge")
RAY = Path(sys.executable).with_name("ray")
NODE_IP = "127.0.0.2"
"""Loopback, but not one Ray rewrites: ``ray start`` replaces 127.0.0.1 and localhost by the machine's
outward address (``ray._private.services.resolve_ip_for_localhost``); any other 127.x address is kept."""


def real_units(data_dir: Path) -> list[Unit]:
    """Every distinct unit the readers get from :data:`SOURCES` (first one read wins), sorted by id."""
    found: dict[str, Unit] = {}
    for source in SOURCES:
        for path in expand_paths([data_dir / source]) if (data_dir / source).exists() else []:
            try:
                result = read_file(path)
            except IngestError:
                continue
            for unit in result.units:
                found.setdefault(unit.unit_id, unit)
    return [found[k] for k in sorted(found)]


def copy_unit(unit: Unit, k: int) -> Unit:
    """The same unit under id ``<unit id>#copy<k>`` with new trace ids (so its spans are new spans)."""
    def trace(tid: str) -> str:
        return hashlib.sha256(f"{tid}#copy{k}".encode()).hexdigest()[:32]

    spans = tuple(s.model_copy(update={"trace_id": trace(s.trace_id)}) for s in unit.spans)
    return unit.model_copy(update={"unit_id": f"{unit.unit_id}#copy{k}", "spans": spans})


def corpus(data_dir: Path, n: int) -> tuple[list[Unit], int]:
    """``n`` units: the real ones, then copies (see the module docstring). Returns ``(units, distinct real)``."""
    real = real_units(data_dir)
    if not real:
        raise RuntimeError(f"no readable units under {data_dir}")
    out = list(real[:n])
    k = 1
    while len(out) < n:
        out.extend(copy_unit(u, k) for u in real[:n - len(out)])
        k += 1
    return out, len(real)


def free_port() -> int:
    """A free TCP port on :data:`NODE_IP`."""
    with socket.socket() as s:
        s.bind((NODE_IP, 0))
        return int(s.getsockname()[1])


class RayCluster:
    """A real Ray cluster on this machine: ``ray start --head`` plus ``nodes - 1`` more node processes.

    Each node gets ``cpus_per_node`` CPUs and a 100 MB object store; loopback only, no dashboard.
    :meth:`stop` runs ``ray stop --force`` and removes the temp folder; use as a context manager
    (or a fixture finalizer) so the cluster is stopped even when the caller fails.
    """

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1) -> None:
        self.nodes, self.cpus_per_node = nodes, cpus_per_node
        self.port = free_port()
        self.address = f"{NODE_IP}:{self.port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="assay-ray-"))
        # Loopback only: no token auth (a ~/.ray/auth_token left by an earlier local ray.init() would
        # otherwise switch the head to token mode without the other node knowing).
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}

    def _run(self, *args: str) -> None:
        subprocess.run([str(RAY), *args], check=True, env=self.env, capture_output=True, timeout=180)

    def start(self) -> RayCluster:
        common = [f"--node-ip-address={NODE_IP}", f"--num-cpus={self.cpus_per_node}",
                  "--object-store-memory=100000000", "--disable-usage-stats"]
        self._run("start", "--head", f"--port={self.port}", "--include-dashboard=false",
                  f"--temp-dir={self.tmp}", *common)
        for _ in range(self.nodes - 1):
            self._run("start", f"--address={self.address}", *common)
        return self

    def wait_for_cpus(self, ray: object, timeout_s: float = 60.0) -> None:
        """Block until the connected cluster reports all its CPUs."""
        want = self.nodes * self.cpus_per_node
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if int(ray.cluster_resources().get("CPU", 0)) >= want:  # type: ignore[attr-defined]
                return
            time.sleep(0.5)
        raise RuntimeError(f"Ray cluster at {self.address} did not report {want} CPUs in {timeout_s} s")

    def stop(self) -> None:
        subprocess.run([str(RAY), "stop", "--force"], env=self.env, capture_output=True, timeout=120, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> RayCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def worker_pids(class_name: str) -> list[int]:
    """PIDs of live Ray worker processes running an actor of ``class_name`` (their title is ``ray::NAME...``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith(f"ray::{class_name}"):
            pids.append(int(proc.name))
    return pids


@contextmanager
def postgres_database(base_url: str) -> Iterator[str]:
    """A fresh database on the server of ``base_url``, dropped afterwards; yields its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"assay_scale_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
