#!/usr/bin/env python3
"""weir benchmark driver (python3, standard library only).

Runs the fio jobs in bench/jobs/ against, in one run and on the same files:

  local disk     the backing directory itself (the limit)
  weir-file      weir over file://<backing dir>          cold and hot
  weir-s3        weir over s3:// on a local weir-s3 server cold and hot
  rclone         rclone mount --vfs-cache-mode full       cold and hot
  s3fs           s3fs (no local cache options)            cold and hot
  raw-get        parallel ranged GETs straight from the S3 server (sequential jobs only)

"cold" = a fresh mount with an empty cache and dropped kernel caches, one per
job and repetition. "hot" = a mount whose cache was warmed by reading every
file once; the kernel caches are dropped before every run, so hot reads come
from the filesystem's own local cache, not from RAM.

See bench/README.md for the knobs (environment variables). Every mount and
process this script makes is undone on exit, failure or signal.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import http.client
import json
import os
import platform
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
JOBS_DIR = HERE / "jobs"

ACCESS_KEY = "weirtest"
SECRET_KEY = "weirtestsecret"
REGION = "us-east-1"
BUCKET = "bench"
NFILES = 4
MiB = 1 << 20

READ_JOBS = ["seq-read-1m-1t", "seq-read-1m-4t", "rand-read-4k", "rand-read-256k"]
WRITE_JOBS = ["seq-write-1m"]
SEQ_JOBS = ["seq-read-1m-1t", "seq-read-1m-4t"]
FUSE_TARGETS = ["weir-file", "weir-s3", "rclone", "s3fs"]
ALL_TARGETS = ["local"] + FUSE_TARGETS + ["raw-get"]


# --------------------------------------------------------------------------
# configuration


def env_bool(name: str, default: bool) -> bool:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    return v.strip().lower() not in ("0", "false", "no", "off")


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


def env_list(name: str, default: list[str]) -> list[str]:
    v = os.environ.get(name)
    if not v:
        return list(default)
    return [x.strip() for x in v.split(",") if x.strip()]


class Cfg:
    def __init__(self) -> None:
        self.quick = env_bool("BENCH_QUICK", False)
        self.size_mb = env_int("BENCH_SIZE_MB", 64 if self.quick else 256)
        self.repeat = max(1, env_int("BENCH_REPEAT", 1 if self.quick else 2))
        self.runtime = env_int("BENCH_RUNTIME", 3 if self.quick else 10)
        self.dir = Path(os.environ.get("BENCH_DIR") or f"/tmp/weir-bench-{os.getpid()}")
        self.keep = env_bool("BENCH_KEEP", False)
        self.drop_caches = env_bool("BENCH_DROP_CACHES", True)
        self.targets = env_list("BENCH_TARGETS", ALL_TARGETS)
        self.jobs = env_list("BENCH_JOBS", READ_JOBS + WRITE_JOBS)
        target_dir = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target") / "release"
        self.weir = Path(os.environ.get("BENCH_WEIR") or target_dir / "weir")
        self.weir_s3 = Path(os.environ.get("BENCH_WEIR_S3") or target_dir / "weir-s3")
        self.weir_opts = os.environ.get("BENCH_WEIR_OPTS", "")
        self.weir_sets = env_list("BENCH_WEIR_SET", [])
        self.cache_size = os.environ.get("BENCH_CACHE_SIZE", "8GiB")
        self.rclone_opts = os.environ.get("BENCH_RCLONE_OPTS", "").split()
        self.s3fs_opts = os.environ.get("BENCH_S3FS_OPTS", "")
        self.raw_threads = env_int("BENCH_RAW_THREADS", 8)
        self.raw_chunk_mb = env_int("BENCH_RAW_CHUNK_MB", 8)
        self.results = Path(os.environ.get("BENCH_RESULTS") or HERE / "results")
        self.strict = env_bool("BENCH_STRICT", False)
        for t in self.targets:
            if t not in ALL_TARGETS:
                die(f"BENCH_TARGETS: unknown target {t!r} (known: {', '.join(ALL_TARGETS)})")
        for j in self.jobs:
            if j not in READ_JOBS + WRITE_JOBS:
                die(f"BENCH_JOBS: unknown job {j!r} (known: {', '.join(READ_JOBS + WRITE_JOBS)})")
        if self.size_mb < 1:
            die("BENCH_SIZE_MB must be at least 1")

    def as_json(self) -> dict:
        return {
            "quick": self.quick,
            "size_mb": self.size_mb,
            "files": NFILES,
            "repeat": self.repeat,
            "runtime_s": self.runtime,
            "drop_caches": self.drop_caches,
            "targets": self.targets,
            "jobs": self.jobs,
            "weir_opts": self.weir_opts,
            "weir_set": self.weir_sets,
            "cache_size": self.cache_size,
            "rclone_opts": self.rclone_opts,
            "s3fs_opts": self.s3fs_opts,
            "raw_threads": self.raw_threads,
            "raw_chunk_mb": self.raw_chunk_mb,
        }


# --------------------------------------------------------------------------
# small helpers

T0 = time.monotonic()
LOAD_AT_START = os.getloadavg()


def log(msg: str) -> None:
    print(f"[bench {time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def die(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr)
    sys.exit(2)


class BenchInterrupted(Exception):
    pass


def on_signal(signum, _frame):
    raise BenchInterrupted(f"signal {signum}")


def run(cmd: list[str], timeout: float = 60, check: bool = True, env=None) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {p.returncode}: {(p.stderr or p.stdout).strip()[-2000:]}")
    return p


def drop_caches(cfg: Cfg) -> None:
    if not cfg.drop_caches:
        return
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        log(f"cannot drop kernel caches ({e}); continuing with BENCH_DROP_CACHES=0")
        cfg.drop_caches = False


def mountinfo() -> dict[str, tuple[str, str]]:
    """mount point -> (fs type, major:minor)."""
    out = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            try:
                sep = parts.index("-")
            except ValueError:
                continue
            mnt = parts[4].replace("\\040", " ")
            out[mnt] = (parts[sep + 1], parts[2])
    return out


def is_mounted(path: Path) -> bool:
    return str(path) in mountinfo()


def wait_mounted(path: Path, proc: subprocess.Popen | None, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_mounted(path):
            # the mount must also answer
            os.listdir(path)
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before the mount appeared")
        time.sleep(0.1)
    raise RuntimeError(f"{what}: {path} not mounted after {timeout:.0f}s")


def pids_of_cmdline(*needles: str) -> list[int]:
    """PIDs whose argv contains every needle as a whole argument."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if all(n in args for n in needles):
            found.append(int(d))
    return found


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def kill_pid(pid: int, grace: float = 5.0) -> None:
    """SIGTERM, wait, then SIGKILL one process we started."""
    if not pid_alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def abort_fuse_connection(path: Path) -> None:
    info = mountinfo().get(str(path))
    if not info or not info[0].startswith("fuse"):
        return
    minor = info[1].split(":")[1]
    try:
        with open(f"/sys/fs/fuse/connections/{minor}/abort", "w") as f:
            f.write("1")
    except OSError:
        pass


def force_unmount(path: Path, weir: Path | None = None) -> None:
    """Unmount, escalating: weir umount, fusermount -u, umount, then lazy and abort."""
    if not is_mounted(path):
        return
    attempts = []
    if weir is not None and weir.exists():
        attempts.append([str(weir), "umount", str(path)])
    attempts += [["fusermount3", "-u", str(path)], ["umount", str(path)]]
    for cmd in attempts:
        try:
            subprocess.run(cmd, capture_output=True, timeout=30)
        except (subprocess.TimeoutExpired, FileNotFoundError):
            pass
        if not is_mounted(path):
            return
        time.sleep(0.3)
        if not is_mounted(path):
            return
    log(f"{path} is busy or hung: lazy unmount and abort of its FUSE connection")
    abort_fuse_connection(path)
    for cmd in (["fusermount3", "-uz", str(path)], ["umount", "-l", str(path)]):
        try:
            subprocess.run(cmd, capture_output=True, timeout=30)
        except (subprocess.TimeoutExpired, FileNotFoundError):
            pass
        if not is_mounted(path):
            return


def dir_usage(path: Path) -> int:
    """Bytes of disk a directory tree really uses (sparse files count what they hold)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


def fmt_rate(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


# --------------------------------------------------------------------------
# the S3 raw baseline: SigV4-signed parallel ranged GETs


EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def sigv4_headers(host: str, path: str, extra: dict[str, str], method: str = "GET",
                  payload: str = EMPTY_SHA256) -> dict[str, str]:
    """Headers of an AWS SigV4-signed request (no query string)."""
    from urllib.parse import quote

    now = _dt.datetime.now(_dt.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canon_headers = "".join(f"{k}:{headers[k]}\n" for k in sorted(headers))
    creq = "\n".join([method, quote(path, safe="/-_.~"), "", canon_headers, signed, payload])
    scope = f"{day}/{REGION}/s3/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])

    def h(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    k = h(h(h(h(("AWS4" + SECRET_KEY).encode(), day), REGION), "s3"), "aws4_request")
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    out = {
        "Host": host,
        "x-amz-content-sha256": payload,
        "x-amz-date": amz_date,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, SignedHeaders={signed}, Signature={sig}",
    }
    out.update(extra)
    return out


def s3_put(port: int, key: str, src: Path, sha256_hex: str) -> None:
    """PUTs the file src as object key (one request)."""
    path = f"/{BUCKET}/{key}"
    size = src.stat().st_size
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        hdrs = sigv4_headers(f"127.0.0.1:{port}", path, {"Content-Length": str(size)}, "PUT", sha256_hex)
        with open(src, "rb") as body:
            conn.request("PUT", path, body=body, headers=hdrs)
            resp = conn.getresponse()
            text = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"PUT {path}: HTTP {resp.status} {text[:300]!r}")
    finally:
        conn.close()


def raw_get(port: int, keys: list[str], size: int, threads: int, chunk: int) -> float:
    """Reads every key fully with parallel ranged GETs; returns MiB/s."""
    work: queue.Queue = queue.Queue()
    for off in range(0, size, chunk):
        for key in keys:  # interleave files so all are read at once
            work.put((key, off, min(chunk, size - off)))
    errors: list[str] = []
    got = [0]
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        buf = bytearray(MiB)
        view = memoryview(buf)
        try:
            while True:
                try:
                    key, off, n = work.get_nowait()
                except queue.Empty:
                    return
                path = f"/{BUCKET}/{key}"
                hdrs = sigv4_headers(f"127.0.0.1:{port}", path, {"Range": f"bytes={off}-{off + n - 1}"})
                conn.request("GET", path, headers=hdrs)
                resp = conn.getresponse()
                if resp.status not in (200, 206):
                    errors.append(f"GET {path} {off}+{n}: HTTP {resp.status} {resp.read()[:300]!r}")
                    return
                total = 0
                while True:
                    r = resp.readinto(view)
                    if not r:
                        break
                    total += r
                if total != n:
                    errors.append(f"GET {path} {off}+{n}: got {total} bytes")
                    return
                with lock:
                    got[0] += total
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()

    start = time.monotonic()
    ts = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.monotonic() - start
    if errors:
        raise RuntimeError("raw GET failed: " + "; ".join(errors[:3]))
    if got[0] != size * len(keys):
        raise RuntimeError(f"raw GET read {got[0]} bytes, expected {size * len(keys)}")
    return got[0] / MiB / elapsed


# --------------------------------------------------------------------------
# targets


class Target:
    """One filesystem under test."""

    name = ""

    def __init__(self, bench: "Bench") -> None:
        self.bench = bench
        self.cfg = bench.cfg
        self.mnt = bench.dir / "mnt" / self.name
        self.gen = 0
        self.log_files: list[Path] = []
        self.cache_dir: Path | None = None

    def path(self) -> Path:
        return self.mnt

    def mount(self) -> None:
        raise NotImplementedError

    def umount(self) -> None:
        raise NotImplementedError

    def fresh_cache(self) -> Path:
        self.gen += 1
        d = self.bench.dir / "cache" / f"{self.name}-{self.gen}"
        d.mkdir(parents=True, exist_ok=True)
        self.cache_dir = d
        return d

    def check_alive(self) -> None:
        pass


class Local(Target):
    name = "local"

    def path(self) -> Path:
        return self.bench.data

    def mount(self) -> None:
        pass

    def umount(self) -> None:
        pass


class Weir(Target):
    def __init__(self, bench, ufs: str):
        super().__init__(bench)
        self.ufs = ufs
        self.pids: list[int] = []

    def mount(self) -> None:
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.cache_dir = self.fresh_cache()
        logf = self.cache_dir / "weir.log"
        self.log_files.append(logf)
        cmd = [str(self.cfg.weir), "mount", str(self.mnt)]
        if self.ufs.startswith("s3://"):
            conf = self.bench.dir / "weir-s3.yaml"
            conf.write_text(
                "mounts:\n"
                "  - path: /\n"
                f"    ufs: {self.ufs}\n"
                f"    options: {{endpoint: \"http://127.0.0.1:{self.bench.s3_port}\", region: {REGION}, "
                f"access_key_id: {ACCESS_KEY}, secret_access_key: {SECRET_KEY}}}\n"
            )
            cmd += ["--config", str(conf)]
        else:
            cmd += ["--ufs", self.ufs]
        cmd += ["--cache-dir", str(self.cache_dir), "--cache-size", self.cfg.cache_size]
        if self.cfg.weir_opts:
            cmd += ["-o", self.cfg.weir_opts]
        for s in self.cfg.weir_sets:
            cmd += ["--set", s]
        run(cmd, timeout=150)
        self.pids = pids_of_cmdline("--foreground", str(self.mnt))
        self.bench.pids.update(self.pids)
        wait_mounted(self.mnt, None, 10, "weir")

    def umount(self) -> None:
        if is_mounted(self.mnt):
            p = run([str(self.cfg.weir), "umount", str(self.mnt)], timeout=60, check=False)
            if p.returncode != 0:
                log(f"weir umount {self.mnt} failed ({p.returncode}): {(p.stderr or p.stdout).strip()}")
                self.bench.note(f"{self.name}: `weir umount` failed: {(p.stderr or p.stdout).strip()}")
            force_unmount(self.mnt, self.cfg.weir)
        # the daemon should exit by itself once unmounted
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in self.pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.pids:
            if pid_alive(pid):
                self.bench.note(f"{self.name}: weir daemon {pid} still running 10s after unmount; killed")
                kill_pid(pid)
            self.bench.pids.discard(pid)
        self.pids = []

    def check_alive(self) -> None:
        for pid in self.pids:
            if not pid_alive(pid):
                raise RuntimeError(f"weir daemon {pid} for {self.mnt} died; see {self.cache_dir}/weir.log")


class ProcFs(Target):
    """A FUSE filesystem run as a child process in the foreground."""

    def __init__(self, bench):
        super().__init__(bench)
        self.proc: subprocess.Popen | None = None

    def command(self, cache: Path) -> tuple[list[str], dict]:
        raise NotImplementedError

    def mount(self) -> None:
        self.mnt.mkdir(parents=True, exist_ok=True)
        cache = self.fresh_cache()
        cmd, env = self.command(cache)
        logf = cache / f"{self.name}.log"
        self.log_files.append(logf)
        with open(logf, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, start_new_session=True
            )
        self.bench.pids.add(self.proc.pid)
        try:
            wait_mounted(self.mnt, self.proc, 30, self.name)
        except Exception:
            self.umount()
            raise

    def umount(self) -> None:
        force_unmount(self.mnt)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_pid(self.proc.pid)
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            self.bench.pids.discard(self.proc.pid)
            self.proc = None

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited; see {self.log_files[-1] if self.log_files else '?'}")


class Rclone(ProcFs):
    name = "rclone"

    def command(self, cache: Path):
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE" and not k.startswith("RCLONE_")}
        conf = self.bench.dir / "rclone.conf"
        conf.touch()
        env.update(
            RCLONE_CONFIG=str(conf),
            RCLONE_S3_PROVIDER="Other",
            RCLONE_S3_ENDPOINT=f"http://127.0.0.1:{self.bench.s3_port}",
            RCLONE_S3_ACCESS_KEY_ID=ACCESS_KEY,
            RCLONE_S3_SECRET_ACCESS_KEY=SECRET_KEY,
            RCLONE_S3_REGION=REGION,
            RCLONE_S3_FORCE_PATH_STYLE="true",
        )
        cmd = [
            "rclone", "mount", f":s3:{BUCKET}", str(self.mnt),
            "--vfs-cache-mode", "full",
            "--cache-dir", str(cache),
            "--log-level", "NOTICE",
        ] + self.cfg.rclone_opts
        return cmd, env


class S3fs(ProcFs):
    name = "s3fs"

    def command(self, cache: Path):
        passwd = self.bench.dir / "s3fs.passwd"
        passwd.write_text(f"{ACCESS_KEY}:{SECRET_KEY}\n")
        passwd.chmod(0o600)
        opts = [
            f"passwd_file={passwd}",
            f"url=http://127.0.0.1:{self.bench.s3_port}",
            "use_path_request_style",
            f"endpoint={REGION}",
            "dbglevel=warn",
            f"tmpdir={cache}",
        ]
        if self.cfg.s3fs_opts:
            opts.append(self.cfg.s3fs_opts)
        cmd = ["s3fs", BUCKET, str(self.mnt), "-f", "-o", ",".join(opts)]
        env = dict(os.environ)
        return cmd, env


# --------------------------------------------------------------------------
# the bench


class Bench:
    def __init__(self, cfg: Cfg) -> None:
        self.cfg = cfg
        self.dir = cfg.dir
        self.data_root = self.dir / "data"
        self.data = self.data_root / BUCKET
        self.size = cfg.size_mb * MiB
        self.pids: set[int] = set()
        self.s3_proc: subprocess.Popen | None = None
        self.s3_port = 0
        self.targets: dict[str, Target] = {}
        # samples[row][job] -> list of MiB/s
        self.samples: dict[str, dict[str, list[float]]] = {}
        self.fio_runs: list[dict] = []
        self.notes: list[str] = []
        self.errors: list[str] = []
        self.crcs: dict[str, int] = {}
        self.broken: set[str] = set()
        self.cache_usage: dict[str, int] = {}

    # ---- bookkeeping

    def note(self, msg: str) -> None:
        log("NOTE: " + msg)
        self.notes.append(msg)

    def error(self, msg: str) -> None:
        log("ERROR: " + msg)
        self.errors.append(msg)

    def add(self, row: str, job: str, value: float) -> None:
        self.samples.setdefault(row, {}).setdefault(job, []).append(value)

    # ---- setup

    def setup(self) -> None:
        cfg = self.cfg
        for b in (cfg.weir, cfg.weir_s3):
            if any(t in cfg.targets for t in ("weir-file", "weir-s3", "rclone", "s3fs", "raw-get")) and not b.exists():
                die(f"{b} not found: build with `cargo build --release -p weir -p weir-testkit`")
        for tool in ["fio"] + (["rclone"] if "rclone" in cfg.targets else []) + (["s3fs"] if "s3fs" in cfg.targets else []):
            if shutil.which(tool) is None:
                die(f"{tool} not found (apt-get install -y fio rclone s3fs fuse3)")
        if self.dir.exists() and any(self.dir.iterdir()):
            die(f"BENCH_DIR {self.dir} exists and is not empty")
        self.data.mkdir(parents=True, exist_ok=True)
        # Private copies: others may rebuild target/release while we run.
        bindir = self.dir / "bin"
        bindir.mkdir()
        for attr in ("weir", "weir_s3"):
            src = getattr(cfg, attr)
            if src.exists():
                dst = bindir / src.name
                shutil.copy2(src, dst)
                setattr(cfg, attr, dst)
        use_s3 = any(t in cfg.targets for t in ("weir-s3", "rclone", "s3fs", "raw-get"))
        if use_s3:
            self.start_s3()
        # The data go in through an S3 PUT when a server runs: s3s-fs then
        # keeps the object's etag beside it. For a file it did not write, it
        # hashes the whole file (MD5) on every GET and HEAD, which would make
        # every S3 client look slow.
        log(f"state in {self.dir}; creating {NFILES} x {cfg.size_mb} MiB data files"
            + (" (uploaded with S3 PUT)" if use_s3 else ""))
        stage = self.dir / "stage.dat"
        for i in range(NFILES):
            name = f"bench-{i}.dat"
            crc = 0
            sha = hashlib.sha256()
            with open(stage if use_s3 else self.data / name, "wb") as f:
                left = self.size
                while left > 0:
                    b = os.urandom(min(MiB, left))
                    crc = zlib.crc32(b, crc)
                    if use_s3:
                        sha.update(b)
                    f.write(b)
                    left -= len(b)
            self.crcs[name] = crc
            if use_s3:
                s3_put(self.s3_port, name, stage, sha.hexdigest())
                stage.unlink()
                if (self.data / name).stat().st_size != self.size:
                    raise RuntimeError(f"{self.data / name}: wrong size after PUT")
        os.sync()
        if use_s3:
            # sanity: the raw GET path works and sees our file
            raw_get(self.s3_port, ["bench-0.dat"], min(self.size, MiB), 1, MiB)
        self.targets["local"] = Local(self)
        if "weir-file" in cfg.targets:
            t = Weir(self, f"file://{self.data}")
            t.name = "weir-file"
            t.mnt = self.dir / "mnt" / t.name
            self.targets["weir-file"] = t
        if "weir-s3" in cfg.targets:
            t = Weir(self, f"s3://{BUCKET}/")
            t.name = "weir-s3"
            t.mnt = self.dir / "mnt" / t.name
            self.targets["weir-s3"] = t
        if "rclone" in cfg.targets:
            self.targets["rclone"] = Rclone(self)
        if "s3fs" in cfg.targets:
            self.targets["s3fs"] = S3fs(self)

    def start_s3(self) -> None:
        logf = self.dir / "weir-s3.log"
        out = open(logf, "ab")
        self.s3_proc = subprocess.Popen(
            [str(self.cfg.weir_s3), "--root", str(self.data_root), "--bucket", BUCKET],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=out, start_new_session=True,
        )
        self.pids.add(self.s3_proc.pid)
        line_box: list[str] = []
        reader = threading.Thread(target=lambda: line_box.append(self.s3_proc.stdout.readline().decode()), daemon=True)
        reader.start()
        reader.join(30)
        line = line_box[0] if line_box else ""
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if not m:
            raise RuntimeError(f"weir-s3 did not start (said {line!r}); see {logf}")
        self.s3_port = int(m.group(1))
        log(f"weir-s3 (pid {self.s3_proc.pid}) serving {self.data} on port {self.s3_port}")

    # ---- running

    def fio(self, target: Target, job: str, tag: str) -> float:
        """Runs one fio job on target; returns MiB/s."""
        target.check_alive()
        out = self.dir / "fio" / f"{len(self.fio_runs):03d}-{target.name}-{tag}-{job}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            BENCH_TARGET=str(target.path()),
            BENCH_FILE_SIZE=str(self.size),
            BENCH_RUNTIME=str(self.cfg.runtime),
            BENCH_WRITE_FILE=f"write-{target.name}.dat",
        )
        cmd = ["fio", "--output-format=json", f"--output={out}"]
        write = job in WRITE_JOBS
        if not write:
            cmd.append("--readonly")
        cmd.append(str(JOBS_DIR / f"{job}.fio"))
        nbytes = self.size * (NFILES if job == "seq-read-1m-4t" else 1)
        timeout = 120 + (self.cfg.runtime if job.startswith("rand") else nbytes / MiB / 4)
        start = time.monotonic()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"fio {job} on {target.name} timed out after {timeout:.0f}s")
        wall = time.monotonic() - start
        try:
            doc = json.loads(out.read_text())
        except (OSError, ValueError):
            raise RuntimeError(f"fio {job} on {target.name} exited {p.returncode}: {p.stderr.strip()[-1500:]}")
        jobs = doc.get("jobs", [])
        errs = [j.get("error") for j in jobs if j.get("error")]
        if p.returncode != 0 or errs:
            raise RuntimeError(
                f"fio {job} on {target.name} exited {p.returncode}, job errors {errs}: {p.stderr.strip()[-1500:]}"
            )
        kind = "write" if write else "read"
        bw = sum(j[kind]["bw_bytes"] for j in jobs) / MiB
        io = sum(j[kind]["io_bytes"] for j in jobs)
        rec = {"target": target.name, "tag": tag, "job": job, "fio_mib_s": bw, "io_bytes": io, "wall_s": wall}
        if write:
            # size / wall time of the whole fio run: includes close(), where
            # weir and s3fs upload; fio's own figure does not.
            rec["wall_mib_s"] = io / MiB / wall
            if io != self.size:
                raise RuntimeError(f"fio {job} on {target.name} wrote {io} bytes, expected {self.size}")
            value = rec["wall_mib_s"]
        else:
            if not job.startswith("rand") and io != nbytes:
                raise RuntimeError(f"fio {job} on {target.name} read {io} bytes, expected {nbytes}")
            value = bw
        rec["mib_s"] = value
        self.fio_runs.append(rec)
        return value

    def measure(self, target: Target, job: str, tag: str, row: str) -> None:
        if row in self.broken:
            return
        try:
            target.check_alive()
        except Exception as e:  # noqa: BLE001
            self.error(f"{row}: {e}")
            self.broken.add(row)
            return
        try:
            drop_caches(self.cfg)
            v = self.fio(target, job, tag)
            self.add(row, job, v)
            log(f"{row:14s} {job:15s} {fmt_rate(v):>8s} MiB/s")
        except BenchInterrupted:
            raise
        except Exception as e:  # noqa: BLE001 - one target's failure must not stop the others
            self.error(f"{row} {job}: {e}")

    def cold(self, name: str, job: str, rep: int) -> None:
        t = self.targets[name]
        row = f"{name} cold"
        if row in self.broken:
            return
        try:
            t.mount()
        except BenchInterrupted:
            raise
        except Exception as e:  # noqa: BLE001
            self.error(f"{name}: mount failed: {e}")
            self.broken.add(row)
            return
        try:
            self.measure(t, job, f"cold{rep}", row)
        finally:
            t.umount()

    def raw(self, job: str) -> None:
        if "raw-get" in self.broken:
            return
        keys = ["bench-0.dat"] if job == "seq-read-1m-1t" else [f"bench-{i}.dat" for i in range(NFILES)]
        try:
            drop_caches(self.cfg)
            v = raw_get(self.s3_port, keys, self.size, self.cfg.raw_threads, self.cfg.raw_chunk_mb * MiB)
            self.add("raw-get", job, v)
            log(f"{'raw-get':14s} {job:15s} {fmt_rate(v):>8s} MiB/s")
        except BenchInterrupted:
            raise
        except Exception as e:  # noqa: BLE001
            self.error(f"raw-get {job}: {e}")

    def warm(self, t: Target) -> None:
        """Reads every file once through t, checking the data against the source."""
        errors: list[str] = []

        def read(name: str) -> None:
            try:
                crc = 0
                n = 0
                with open(t.path() / name, "rb", buffering=0) as f:
                    buf = bytearray(MiB)
                    while True:
                        r = f.readinto(buf)
                        if not r:
                            break
                        crc = zlib.crc32(memoryview(buf)[:r], crc)
                        n += r
                if n != self.size or crc != self.crcs[name]:
                    errors.append(f"{name}: read {n} bytes, crc {crc:#x}; expected {self.size} bytes, crc {self.crcs[name]:#x}")
            except OSError as e:
                errors.append(f"{name}: {e}")

        start = time.monotonic()
        ts = [threading.Thread(target=read, args=(n,)) for n in self.crcs]
        for x in ts:
            x.start()
        for x in ts:
            x.join()
        if errors:
            raise RuntimeError("warm-up read through the mount failed or returned wrong data: " + "; ".join(errors))
        log(f"warmed {t.name} in {time.monotonic() - start:.1f}s (data verified)")

    def rotate(self, names: list[str], rep: int) -> list[str]:
        k = rep % len(names) if names else 0
        return names[k:] + names[:k]

    def phase_cold(self) -> None:
        cfg = self.cfg
        fuse = [n for n in FUSE_TARGETS if n in self.targets]
        jobs = [j for j in READ_JOBS if j in cfg.jobs]
        for rep in range(cfg.repeat):
            log(f"== cold pass {rep + 1}/{cfg.repeat}")
            for job in jobs:
                order = ["local"] + fuse + (["raw-get"] if job in SEQ_JOBS and "raw-get" in cfg.targets else [])
                for name in self.rotate(order, rep):
                    if name == "local":
                        if "local" in cfg.targets:
                            self.measure(self.targets["local"], job, f"local{rep}", "local disk")
                    elif name == "raw-get":
                        self.raw(job)
                    else:
                        self.cold(name, job, rep)

    def phase_hot(self) -> None:
        cfg = self.cfg
        fuse = [n for n in FUSE_TARGETS if n in self.targets]
        mounted = []
        for name in fuse:
            t = self.targets[name]
            try:
                t.mount()
                mounted.append(name)
                self.warm(t)
            except BenchInterrupted:
                raise
            except Exception as e:  # noqa: BLE001
                self.error(f"{name} hot: {e}")
                self.broken.add(f"{name} hot")
        jobs = [j for j in READ_JOBS if j in cfg.jobs]
        for rep in range(cfg.repeat):
            log(f"== hot pass {rep + 1}/{cfg.repeat}")
            for job in jobs:
                for name in self.rotate(["local"] + mounted, rep):
                    if name == "local":
                        if "local" in cfg.targets:
                            self.measure(self.targets["local"], job, f"local-h{rep}", "local disk")
                    else:
                        self.measure(self.targets[name], job, f"hot{rep}", f"{name} hot")
        if any(j in cfg.jobs for j in WRITE_JOBS):
            for rep in range(cfg.repeat):
                log(f"== write pass {rep + 1}/{cfg.repeat}")
                for name in self.rotate(["local"] + mounted, rep):
                    if name == "local" and "local" not in cfg.targets:
                        continue
                    self.write(self.targets[name], rep)
        data_bytes = NFILES * self.size
        for name in mounted:
            t = self.targets[name]
            if t.cache_dir is not None:
                used = dir_usage(t.cache_dir)
                self.cache_usage[name] = used
                log(f"{name}: hot cache holds {used / MiB:.0f} MiB for {data_bytes / MiB:.0f} MiB of data")
                if name.startswith("weir") and used > 1.25 * data_bytes:
                    self.note(
                        f"{name}: after the hot pass its cache dir holds {used / MiB:.0f} MiB for "
                        f"{data_bytes / MiB:.0f} MiB of data: objects were cached more than once "
                        f"(did the object version in the cache key change?)"
                    )
            t.umount()

    def write(self, t: Target, rep: int) -> None:
        job = WRITE_JOBS[0]
        row = "local disk" if t.name == "local" else f"{t.name} hot"
        if row in self.broken:
            return
        fname = f"write-{t.name}.dat"
        path = t.path() / fname
        backing = self.data / fname
        try:
            if path.exists():
                path.unlink()
        except OSError as e:
            self.error(f"{row} {job}: cannot remove old {path}: {e}")
            return
        self.measure(t, job, f"w{rep}", row)
        # Where weir writes through, the object must be complete once fio has
        # closed the file. (rclone uploads in the background, later.)
        if t.name in ("weir-file", "weir-s3", "s3fs"):
            try:
                st = backing.stat()
                if st.st_size != self.size:
                    self.note(f"{row}: after close, backing object {fname} has {st.st_size} bytes, expected {self.size}")
            except FileNotFoundError:
                self.note(f"{row}: after close, backing object {fname} is missing")
        try:
            path.unlink()
        except OSError as e:
            self.error(f"{row} {job}: cannot remove {path}: {e}")

    # ---- results

    def stats(self) -> dict:
        out = {}
        for row, jobs in self.samples.items():
            out[row] = {
                j: {"samples": v, "median": statistics.median(v), "best": max(v), "unit": "MiB/s"}
                for j, v in jobs.items()
            }
        return out

    def ratios(self, st: dict, key: str) -> dict:
        def get(row, job):
            return st.get(row, {}).get(job, {}).get(key)

        res: dict[str, dict[str, float | None]] = {}
        for job in self.cfg.jobs:
            local = get("local disk", job)
            peers = [v for v in (get("rclone cold", job), get("s3fs cold", job)) if v]
            best_peer = max(peers) if peers else None
            r = {}
            for src in ("weir-file hot", "weir-s3 hot"):
                v = get(src, job)
                r[f"{src} / local disk"] = v / local if v and local else None
            if job in WRITE_JOBS:
                wpeers = [x for x in (get("rclone hot", job), get("s3fs hot", job)) if x]
                v = get("weir-s3 hot", job)
                r["weir-s3 / best of rclone, s3fs"] = v / max(wpeers) if v and wpeers else None
            else:
                v = get("weir-s3 cold", job)
                r["weir-s3 cold / best of rclone, s3fs cold"] = v / best_peer if v and best_peer else None
                raw = get("raw-get", job)
                r["weir-s3 cold / raw-get"] = v / raw if v and raw else None
            res[job] = r
        return res

    def checks(self, ratios: dict) -> list[dict]:
        out = []
        for job in SEQ_JOBS:
            if job not in ratios:
                continue
            for name, goal in (
                ("weir-file hot / local disk", 0.8),
                ("weir-s3 hot / local disk", 0.8),
                ("weir-s3 cold / best of rclone, s3fs cold", 1.5),
            ):
                v = ratios[job].get(name)
                out.append({"job": job, "ratio": name, "goal": goal, "value": v,
                            "ok": None if v is None else v >= goal})
        return out

    def report(self) -> dict:
        st = self.stats()
        med = self.ratios(st, "median")
        best = self.ratios(st, "best")
        checks = self.checks(med)
        rows = ["local disk"]
        for n in FUSE_TARGETS:
            rows += [f"{n} cold", f"{n} hot"]
        rows += ["raw-get"]
        rows = [r for r in rows if r in st]
        jobs = [j for j in READ_JOBS + WRITE_JOBS if j in self.cfg.jobs]

        def table(key: str) -> str:
            w0 = max([len(r) for r in rows] + [16])
            lines = ["  ".join([f"{'target':{w0}s}"] + [f"{c:>15s}" for c in jobs])]
            for r in rows:
                cells = [f"{fmt_rate(st.get(r, {}).get(c, {}).get(key)):>15s}" for c in jobs]
                lines.append("  ".join([f"{r:{w0}s}"] + cells))
            return "\n".join(lines)

        sz = f"{NFILES} x {self.cfg.size_mb} MiB files, {self.cfg.repeat} repeat(s), random reads <= {self.cfg.runtime}s"
        print()
        print(f"weir bench — MiB/s, median of {self.cfg.repeat} ({sz})")
        la0, la1 = LOAD_AT_START, os.getloadavg()
        print(f"(1-min load average {la0[0]:.1f} before the run, {la1[0]:.1f} at its end, {os.cpu_count()} CPUs;"
              " a high figure before the run means other work competed for the CPU)")
        print(table("median"))
        if self.cfg.repeat > 1:
            print()
            print("best of runs, MiB/s")
            print(table("best"))
        if any(j in WRITE_JOBS for j in jobs):
            print("(seq-write-1m: size / wall time of the fio run, close() included; written through the hot mount)")
        print()
        names: list[str] = []
        for job in jobs:
            for name in med.get(job, {}):
                if name not in names:
                    names.append(name)
        w0 = max(len(n) for n in names) if names else 10
        print("ratios, median (best)")
        print("  ".join([f"{'':{w0}s}"] + [f"{c:>15s}" for c in jobs]))
        for name in names:
            cells = []
            for job in jobs:
                if name in med.get(job, {}):
                    cell = f"{fmt_ratio(med[job][name])} ({fmt_ratio(best[job][name])})"
                else:
                    cell = ""
                cells.append(f"{cell:>15s}")
            print("  ".join([f"{name:{w0}s}"] + cells))
        print()
        print("targets")
        for c in checks:
            verdict = "n/a" if c["ok"] is None else ("PASS" if c["ok"] else "FAIL")
            print(f"  {verdict:4s}  {c['job']:15s} {c['ratio']:42s} {fmt_ratio(c['value']):>8s} (goal >= {c['goal']}x)")
        if self.notes:
            print()
            print("notes")
            for n in self.notes:
                print("  - " + n)
        if self.errors:
            print()
            print("errors")
            for e in self.errors:
                print("  - " + e)
        return {"results": st, "ratios_median": med, "ratios_best": best, "checks": checks}

    def weir_log_issues(self) -> list[dict]:
        issues = []
        for name in ("weir-file", "weir-s3"):
            t = self.targets.get(name)
            if not t:
                continue
            for lf in t.log_files:
                try:
                    text = lf.read_text(errors="replace")
                except OSError:
                    continue
                bad = [ln for ln in text.splitlines() if re.search(r"\b(ERROR|WARN|panic|panicked)\b", ln)]
                if bad:
                    issues.append({"target": name, "log": str(lf), "lines": bad[:50], "count": len(bad)})
        return issues

    def keep_logs(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for t in self.targets.values():
            for lf in t.log_files:
                if lf.exists() and lf.stat().st_size > 0:
                    shutil.copy(lf, dest / f"{lf.parent.name}-{lf.name}")
        s3log = self.dir / "weir-s3.log"
        if s3log.exists() and s3log.stat().st_size > 0:
            shutil.copy(s3log, dest / "weir-s3-server.log")
        if not any(dest.iterdir()):
            dest.rmdir()

    # ---- teardown

    def cleanup(self) -> None:
        for t in list(self.targets.values()):
            try:
                t.umount()
            except Exception as e:  # noqa: BLE001
                log(f"cleanup: {t.name}: {e}")
        # any mount left below our state dir
        mnt_root = str(self.dir / "mnt")
        for m in sorted(mountinfo(), key=len, reverse=True):
            if m.startswith(mnt_root + "/"):
                force_unmount(Path(m), self.cfg.weir)
        if self.s3_proc is not None:
            kill_pid(self.s3_proc.pid)
            try:
                self.s3_proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self.pids.discard(self.s3_proc.pid)
        for pid in list(self.pids):
            kill_pid(pid)
        if not self.cfg.keep:
            if any(m.startswith(str(self.dir) + "/") for m in mountinfo()):
                log(f"not removing {self.dir}: something is still mounted below it")
            else:
                shutil.rmtree(self.dir, ignore_errors=True)
        else:
            log(f"kept {self.dir} (BENCH_KEEP=1)")


def tool_versions(cfg: Cfg) -> dict:
    def first_line(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            return (p.stdout or p.stderr).strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            return None

    return {
        "weir": first_line([str(cfg.weir), "--version"]),
        "fio": first_line(["fio", "--version"]),
        "rclone": first_line(["rclone", "version"]),
        "s3fs": first_line(["s3fs", "--version"]),
        "kernel": platform.release(),
        "loadavg_start": LOAD_AT_START,
        "loadavg_end": os.getloadavg(),
        "cpus": os.cpu_count(),
    }


def main() -> int:
    if os.geteuid() != 0:
        die("run as root (mounts and drop_caches need it)")
    cfg = Cfg()
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, on_signal)
    bench = Bench(cfg)
    started = _dt.datetime.now()
    stamp = started.strftime("%Y%m%dT%H%M%S")
    status = 0
    out: dict = {}
    try:
        bench.setup()
        bench.phase_cold()
        bench.phase_hot()
    except BenchInterrupted as e:
        log(f"interrupted ({e}); cleaning up")
        status = 130
    except Exception as e:  # noqa: BLE001
        bench.error(f"bench aborted: {e}")
        traceback.print_exc()
        status = 1
    finally:
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        try:
            # unmount first so the weir logs are complete
            for t in list(bench.targets.values()):
                try:
                    t.umount()
                except Exception as e:  # noqa: BLE001
                    log(f"cleanup: {t.name}: {e}")
            issues = bench.weir_log_issues()
            cfg.results.mkdir(parents=True, exist_ok=True)
            if issues or bench.errors:
                bench.keep_logs(cfg.results / f"{stamp}-logs")
            if bench.samples:
                out = bench.report()
            if issues:
                print()
                print("weir log warnings/errors (logs copied to " + str(cfg.results / f"{stamp}-logs") + ")")
                for i in issues:
                    print(f"  {i['target']} {i['log']}: {i['count']} line(s), e.g.")
                    for ln in i["lines"][:5]:
                        print("    " + ln[:300])
            doc = {
                "timestamp": started.isoformat(timespec="seconds"),
                "duration_s": round(time.monotonic() - T0, 1),
                "config": cfg.as_json(),
                "versions": tool_versions(cfg),
                **out,
                "runs": bench.fio_runs,
                "notes": bench.notes,
                "errors": bench.errors,
                "weir_log_issues": issues,
                "hot_cache_bytes": bench.cache_usage,
            }
            path = cfg.results / f"{stamp}.json"
            path.write_text(json.dumps(doc, indent=2) + "\n")
            print()
            print(f"results: {path}  ({doc['duration_s']}s)")
        finally:
            bench.cleanup()
    if status == 0 and cfg.strict and any(c["ok"] is False for c in out.get("checks", [])):
        status = 3
    if status == 0 and cfg.strict and bench.errors:
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
