"""A real single-node Apache Kafka (KRaft) broker run by the project itself.

There is no Docker on the machines we target, so the broker comes from Maven
Central: `deploy/kafka/pom.xml` names the jars, Maven fetches them once into a
git-ignored cache, and this module formats storage, starts the JVM in the
background and waits until a metadata request succeeds. Pid, config and logs
live under `<data_dir>/kafka`, so a second `start` finds the running broker and
does nothing, and `stop` works from any shell.
"""

from __future__ import annotations

import fcntl
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from chainwatch.errors import UserError
from chainwatch.logs import silenced
from chainwatch.settings import Settings
from schemas.kafka_security import PLAINTEXT, Kafka, KafkaEndpoint, KafkaSecurity

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy" / "kafka"
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
OPEN_FILES_WARN_SHARE = 0.5
"""Warn once the partitions in a broker's data dir reach this share of its open-file
limit: the broker keeps about one file open per partition and dies of "Too many open
files" near the limit (a broker kept for days of test runs got there, every test
making its own topics)."""
_PARTITION_DIR = re.compile(r".+-\d+$")


class BrokerError(UserError):
    """The local broker cannot be fetched, started or stopped; the message says why."""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    detail: str


def _pom_version() -> str:
    try:
        text = (DEPLOY_DIR / "pom.xml").read_text()
    except FileNotFoundError:
        # An installed wheel or the image has no deploy/: the local broker is a
        # source checkout's tool, and the user needs their own Kafka, not a traceback.
        raise UserError(
            f"the local broker runs from a source checkout ({DEPLOY_DIR / 'pom.xml'} is "
            "not here); point CHAINWATCH_KAFKA__BOOTSTRAP_SERVERS at your Kafka instead"
        ) from None
    start = text.index("<kafka.version>") + len("<kafka.version>")
    return text[start : text.index("</kafka.version>")]


def jar_dir() -> Path:
    """The cached jars of the pinned Kafka version (shared by every data dir)."""
    return DEPLOY_DIR / "lib" / _pom_version()


def _require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BrokerError(f"{name} not found on PATH: {hint}")
    return path


JAVA_NEEDED = 17
"""Kafka 4's broker needs Java 17 (an older one fails with UnsupportedClassVersionError,
said only in the broker's log)."""

JAVA_HINT = "install a Java 17+ runtime (e.g. apt install openjdk-17-jre-headless)"


def java_major(version_text: str) -> int | None:
    """The major version in `java -version`'s output: `"17.0.15"` -> 17, `"1.8.0_292"` -> 8."""
    found = re.search(r'version "(\d+)(?:\.(\d+))?', version_text)
    if found is None:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def java_version_text(java: str) -> str:
    """`java -version`'s output (it prints to stderr), within a deadline."""
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"{java} -version did not answer: {exc}") from None
    return done.stderr + done.stdout


def _require_java() -> str:
    java = _require_tool("java", JAVA_HINT)
    text = java_version_text(java)
    major = java_major(text)
    if major is not None and major < JAVA_NEEDED:
        first = (text.strip().splitlines() or [""])[0]
        raise BrokerError(
            f"{java} is Java {major} ({first}); Kafka needs Java {JAVA_NEEDED}+: {JAVA_HINT}"
        )
    return java


def fetch_jars(progress: Callable[[str], None] = lambda _msg: None) -> Path:
    """Download the broker jars with Maven once; later calls return the cache.

    Processes that start a broker at once (the test suite's two sessions on a
    fresh clone) fetch one after the other: the second waits on a lock file
    beside the cache and then finds it complete, instead of downloading too and
    racing the first to put its copy in place.
    """
    target = jar_dir()
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.parent / ".fetch.lock"):
        if (target / ".complete").exists():
            return target
        _download(target, progress)
    return target


FETCH_LOCK_WAIT_S = 20 * 60
"""How long a fetch waits for another process's (whose Maven run is bounded at 15 min)."""


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock_path` (released when the process dies),
    waiting at most `FETCH_LOCK_WAIT_S` for the process that holds it."""
    deadline = time.monotonic() + FETCH_LOCK_WAIT_S
    with lock_path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BrokerError(
                        f"another process has been fetching the Kafka jars for over "
                        f"{FETCH_LOCK_WAIT_S // 60} minutes (lock {lock_path})"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download(target: Path, progress: Callable[[str], None]) -> None:
    _require_java()
    mvn = _require_tool("mvn", "install Apache Maven (e.g. apt install maven)")
    progress(f"fetching Apache Kafka {_pom_version()} jars from Maven Central (first run only)")
    staging = Path(tempfile.mkdtemp(prefix="jars-", dir=target.parent))
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(DEPLOY_DIR / "pom.xml"),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
    except subprocess.TimeoutExpired:
        shutil.rmtree(staging, ignore_errors=True)
        raise BrokerError("Maven did not fetch the Kafka jars within 15 minutes") from None
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
        raise BrokerError("Maven could not fetch the Kafka jars: " + " | ".join(tail))
    (staging / ".complete").touch()
    install_jars(staging, target)


def install_jars(staging: Path, target: Path) -> None:
    """Move a complete download into place. A complete copy already there (put by a
    process that does not take the lock, such as an older checkout) is kept and this
    one dropped; an incomplete one is replaced."""
    if target.exists() and not (target / ".complete").exists():
        shutil.rmtree(target)  # a copy from before downloads were staged whole
    try:
        staging.rename(target)
    except OSError as exc:
        if not (target / ".complete").exists():
            shutil.rmtree(staging, ignore_errors=True)
            raise BrokerError(f"could not put the Kafka jars in {target}: {exc}") from exc
        shutil.rmtree(staging, ignore_errors=True)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def metadata_ok(bootstrap: Kafka, timeout_s: float = 5.0) -> bool:
    """True when the broker answers a metadata request within `timeout_s` (the readiness probe)."""
    return kafka_problem(bootstrap, timeout_s) is None


def kafka_problem(bootstrap: Kafka, timeout_s: float = 5.0) -> str | None:
    """None when the broker answers a metadata request within `timeout_s` (the readiness
    probe), else what is wrong: "authentication failed (<the broker's reason>)" when it
    refused this client's credentials (`kafka_admin.login_refused`), "TLS handshake
    failed (<OpenSSL's reason>)" when the last broker reached failed it
    (`kafka_start.tls_failure`), "does not answer" otherwise."""
    from kafka.errors import KafkaError, SaslAuthenticationFailedError

    from chainwatch.kafka_admin import (
        KafkaDeadlineExceeded,
        bounded,
        close_admin,
        login_refused,
        started_admin,
    )
    from chainwatch.kafka_start import TlsHandshakeFailed

    def probe() -> bool:
        admin = started_admin(bootstrap, request_ms=int(timeout_s * 1000))
        try:
            admin.describe_cluster()
            return True
        finally:
            close_admin(admin)

    try:
        bounded(probe, timeout_s=timeout_s + 2, what="a metadata request")
    except SaslAuthenticationFailedError as exc:
        return login_refused(exc)
    except TlsHandshakeFailed as exc:
        return str(exc)
    except (KafkaError, OSError, ValueError, KafkaDeadlineExceeded):
        return "does not answer"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child is not alive
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return True


STATUS_PROBE_S = 3.0
"""How long `chainwatch kafka status` waits for a running broker's metadata answer."""

LAUNCH_TIMEOUT_S = 30.0
"""How long the shell that starts the broker in the background may take to return (it
returns at once: the broker's own start is waited for apart)."""


_LAUNCH_SCRIPT = (
    # the broker gets the highest open-file limit it may have (one file per partition)
    'ulimit -n "$(ulimit -Hn)" 2>/dev/null; '
    'exec </dev/null; "$@" >>"$CHAINWATCH_BROKER_LOG" 2>&1 & echo $!'
)


def _launch_detached(cmd: list[str], *, cwd: Path, log: Path) -> int:
    """Start `cmd` in the background, owned by init rather than by this process.

    The broker outlives the command that started it (`chainwatch kafka start`
    returns), so it is started through a shell that backgrounds it and exits. The
    shell leads a new session and process group, which the broker shares: a shell
    that does not return in time is killed with its group, so a broker it already
    started is not left running untracked.
    """
    try:
        shell = subprocess.Popen(
            ["/bin/sh", "-c", _LAUNCH_SCRIPT, "sh", *cmd],
            cwd=cwd,
            env={**os.environ, "CHAINWATCH_BROKER_LOG": str(log)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as exc:
        raise BrokerError(
            f"could not launch the Kafka broker: /bin/sh did not run ({exc.strerror or exc})"
        ) from None
    try:
        out, err = shell.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _kill_group(shell)
        raise BrokerError(
            "could not launch the Kafka broker: the shell that starts it in the background "
            f"did not return within {LAUNCH_TIMEOUT_S:g} s (is the machine overloaded?); "
            f"its log: {log}"
        ) from None
    if shell.returncode != 0 or not out.strip().isdigit():
        raise BrokerError(f"could not launch the Kafka broker: {err.strip()[-300:]}")
    return int(out.strip())


def _kill_group(shell: subprocess.Popen[str]) -> None:
    """Kill the launch shell's process group (the shell, and a broker it started)."""
    with suppress(ProcessLookupError):
        os.killpg(shell.pid, signal.SIGKILL)  # the group's id is the shell's pid
    with suppress(subprocess.TimeoutExpired):
        shell.communicate(timeout=LAUNCH_TIMEOUT_S)  # reaped, its pipes closed


def open_files_limit() -> int:
    """The open-file limit a broker started now gets (the hard limit: see `_launch_detached`)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if hard == resource.RLIM_INFINITY else max(soft, hard)


def open_files_warning(data_dir: Path, limit: int) -> str | None:
    """A warning when the partitions kept in `data_dir` near the open-file `limit`."""
    try:
        with os.scandir(data_dir) as entries:
            partitions = sum(1 for e in entries if e.is_dir() and _PARTITION_DIR.match(e.name))
    except OSError:  # no data yet
        return None
    if partitions < limit * OPEN_FILES_WARN_SHARE:
        return None
    return (
        f"the broker keeps {partitions} partitions in {data_dir} against an open-file limit of "
        f"{limit}: it keeps about one file open per partition and will fail with 'Too many open "
        "files' near the limit. Delete topics you no longer need, or run `chainwatch kafka "
        f"stop`, remove {data_dir} (every topic in it is lost) and start again"
    )


class LocalBroker:
    """The broker of one data dir: `start`, `stop`, `status`, all idempotent.

    `overrides` are written after the lines of `deploy/kafka/server.properties`, so
    they win. The tests use them for a broker that creates topics by itself, as
    Kafka's default does; `auto.create.topics.enable` is read only at start. A broker
    whose overrides make its listener a secured one (the tests' SASL broker) is probed
    with `security`."""

    def __init__(
        self,
        settings: Settings,
        overrides: Mapping[str, str] | None = None,
        *,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        self.settings = settings
        self.overrides = dict(overrides or {})
        self.home = settings.kafka_dir
        self.port = settings.kafka.local_port
        self.controller_port = settings.kafka.local_controller_port
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.endpoint = KafkaEndpoint(self.bootstrap, security)

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "server.log"

    def open_files_warning(self) -> str | None:
        """Whether this broker's partitions near its open-file limit (`open_files_warning`)."""
        return open_files_warning(self.home / "data", open_files_limit())

    def _pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def status(self) -> BrokerStatus:
        pid = self._pid()
        if pid is None:
            return BrokerStatus(False, None, self.bootstrap, "not running")
        with silenced("kafka", "aiokafka"):  # the answer is this status, in one line
            answers = metadata_ok(self.endpoint, timeout_s=STATUS_PROBE_S)
        if answers:
            return BrokerStatus(True, pid, self.bootstrap, "ready")
        return BrokerStatus(False, pid, self.bootstrap, "process alive but not answering")

    def _write_config(self) -> Path:
        template = (DEPLOY_DIR / "server.properties").read_text()
        props = template.format(
            port=self.port, controller_port=self.controller_port, log_dir=self.home / "data"
        )
        props += "".join(f"{key}={value}\n" for key, value in self.overrides.items())
        path = self.home / "server.properties"
        path.write_text(props)
        log4j = (DEPLOY_DIR / "log4j2.properties").read_text()
        (self.home / "log4j2.properties").write_text(log4j.format(log_file=self.log_file))
        return path

    def _format_storage(self, java: str, classpath: str, config: Path) -> None:
        if (self.home / "data" / "meta.properties").exists():
            return
        cluster_id_file = self.home / "cluster.id"
        if not cluster_id_file.exists():
            # StorageTool wants a base64 UUID of 22 chars; uuid4 bytes encode the same way.
            import base64

            raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            cluster_id_file.write_text(raw)
        cmd = [
            java,
            # a tool that runs ~2 s: the JIT's optimising tier and G1's threads only
            # cost it start-up (~1 s of 2.8 s on a 2-core VM)
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            # `=`: an id may begin with "-" (urlsafe base64), which argparse would
            # take for an option
            f"--cluster-id={cluster_id_file.read_text().strip()}",
            "-c",
            str(config),
            "--ignore-formatted",
        ]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=180)
        except subprocess.TimeoutExpired:
            raise BrokerError("formatting Kafka storage did not finish within 180 s") from None
        if result.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed: {result.stderr.strip()[-300:]}")

    def start(self, progress: Callable[[str], None] = lambda _msg: None) -> BrokerStatus:
        """Start the broker unless it already runs; return once it answers metadata."""
        current = self.status()
        if current.running:
            return current
        if current.pid is not None:
            raise BrokerError(
                f"a broker process (pid {current.pid}) exists but does not answer on "
                f"{self.bootstrap}; run `chainwatch kafka stop` and start again"
            )
        for port in (self.port, self.controller_port):
            if port_open("127.0.0.1", port):
                raise BrokerError(
                    f"port {port} on 127.0.0.1 is already in use by another process; stop it "
                    "or set CHAINWATCH_KAFKA__LOCAL_PORT / CHAINWATCH_KAFKA__LOCAL_CONTROLLER_PORT"
                )
        java = _require_java()
        jars = fetch_jars(progress)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        classpath = str(jars / "*")
        self._format_storage(java, classpath, config)
        heap = self.settings.kafka.local_heap
        cmd = [
            java,
            "-Xms256m",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(config),
        ]
        progress(f"starting Kafka broker on {self.bootstrap}")
        pid = _launch_detached(cmd, cwd=self.home, log=self.home / "logs" / "stdout.log")
        self.pid_file.write_text(str(pid))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise BrokerError(f"the Kafka broker exited during start-up; see {self.log_file}")
            if port_open("127.0.0.1", self.port) and metadata_ok(self.endpoint):
                return BrokerStatus(True, pid, self.bootstrap, "ready")
            time.sleep(0.25)
        raise BrokerError(
            f"the Kafka broker did not answer within {READY_TIMEOUT_S:.0f}s; see {self.log_file}"
        )

    def stop(self) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after a timeout). False if none ran."""
        pid = self._pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True
