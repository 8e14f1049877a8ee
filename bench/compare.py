#!/usr/bin/env python3
"""Side-by-side macro benchmark of `secured` against raw TCP, OpenSSL TLS and
OpenSSH on loopback. Run it through bench/compare.sh, which installs the
peers and builds the binaries first.

    bench/compare.sh                      # RUNS (default 3) runs of everything, 1 GiB
    bench/compare.sh --quick              # 1 run, 256 MiB, 3 s handshakes, 1000 sessions
    bench/compare.sh --only secured,tls12-python --runs 5 --size 512MiB

Everything listens on and connects to 127.0.0.1 only. Every key, config and
test file lives in a temporary folder that is removed at exit (also on
Ctrl-C), and every child process is killed in a `finally`. Each measurement
is repeated RUNS times in interleaved rounds (round 1 of everything, then
round 2, ...), the table shows the median [min-max], and each ratio is the
median of per-round ratios, secured's value and the peer's from the same
round. MB = 10^6 bytes. Python standard library only.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SECURED = REPO / "target" / "release" / "secured"
LOAD = REPO / "target" / "release" / "examples" / "load"
RESULTS_MD = REPO / "bench" / "results.md"
CHUNK = 256 * 1024
MIB = 1 << 20
NAMES = ["records", "tcp", "secured", "fetch", "tls12-openssl", "tls12-python", "tls13", "ssh", "handshakes", "sessions"]
TLS12_CIPHER = "AES256-SHA256"
TLS13_CIPHER = "TLS_AES_256_GCM_SHA384"
SSH_CIPHER = "aes256-cbc"
SSH_MAC = "hmac-sha2-256-etm@openssh.com"

CHILDREN = []  # every Popen we started; killed (by process group id) at exit


class BenchError(Exception):
    """A measurement that could not be made or whose result is wrong."""


# --------------------------------------------------------------------------
# Processes, ports, /proc


def spawn(cmd, **kw):
    """Starts a child in its own process group and remembers it for cleanup."""
    proc = subprocess.Popen([str(c) for c in cmd], start_new_session=True, **kw)
    CHILDREN.append(proc)
    return proc


def stop(proc, sig=signal.SIGTERM, timeout=10.0):
    """Stops one child we started (its process group), bounded."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream:
            try:
                stream.close()
            except OSError:
                pass


def kill_all_children():
    for proc in CHILDREN:
        if proc.poll() is None:
            try:
                stop(proc, signal.SIGTERM, timeout=3)
            except Exception:  # noqa: BLE001 - best effort at exit
                pass


def run(cmd, timeout, **kw):
    """Runs a command to completion (bounded); returns CompletedProcess."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    proc = spawn(cmd, **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc, signal.SIGKILL)
        raise BenchError(f"{Path(str(cmd[0])).name} did not finish within {timeout:.0f} s: {' '.join(map(str, cmd))}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    """Whether something listens on 127.0.0.1:port (from /proc/net/tcp)."""
    want = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1] == want and parts[3] == "0A":
                    return True
    except OSError:
        pass
    return False


def wait_listening(port, proc, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listening(port):
            return
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with status {proc.returncode} before listening on port {port}")
        time.sleep(0.02)
    raise BenchError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def proc_kib(pid, field):
    """VmHWM / VmRSS of a live process in KiB, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def descendants(root):
    """PIDs of every live descendant of `root`."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        for c in children.get(pid, []):
            out.append(c)
            todo.append(c)
    return out


class PeakSampler:
    """Samples VmHWM of some processes every 0.2 s (for peers that exit by
    themselves, whose /proc entry is gone when the run ends). VmHWM is a
    high-water mark, so the last sample before exit is close to the peak."""

    def __init__(self, pids_fn, comm=None):
        self.pids_fn, self.comm, self.peak = pids_fn, comm, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            for pid in self.pids_fn():
                if self.comm:
                    try:
                        with open(f"/proc/{pid}/comm") as f:
                            if f.read().strip() != self.comm:
                                continue
                    except OSError:
                        continue
                kib = proc_kib(pid, "VmHWM")
                if kib and (self.peak is None or kib > self.peak):
                    self.peak = kib
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


class LineReader:
    """Reads lines from a child's stdout with a deadline (no unbounded waits)."""

    def __init__(self, stream):
        self.fd = stream.fileno()
        self.buf = b""
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.fd, selectors.EVENT_READ)

    def until(self, prefix, timeout):
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith(prefix):
                    return text
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"no line starting with {prefix!r} within {timeout:.0f} s")
            if self.sel.select(timeout=left):
                data = os.read(self.fd, 65536)
                if not data:
                    raise BenchError(f"output ended before a line starting with {prefix!r}")
                self.buf += data


def kv(line):
    """`a=1 b=2.5` → {"a": "1", "b": "2.5"}."""
    return dict(tok.split("=", 1) for tok in line.split() if "=" in tok)


# --------------------------------------------------------------------------
# The Python ssl harness: its server runs as `compare.py --tls-server ...`


def tls_context(server, tls, cert, key=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    if tls == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(TLS12_CIPHER)
    else:
        # Python cannot set TLS 1.3 suites; OpenSSL's default order puts
        # TLS_AES_256_GCM_SHA384 first, and the client checks what it got.
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if server:
        ctx.load_cert_chain(cert, key)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cert)
    return ctx


def tls_server_main(args):
    """One connection: an 8-byte length, then that many bytes read with
    recv_into a 256 KiB buffer, then one byte back. Prints a JSON summary."""
    ctx = tls_context(True, args.tls, args.cert, args.key)
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        ls.settimeout(60)
        print(f"READY {ls.getsockname()[1]}", flush=True)
        conn, _ = ls.accept()
        conn.settimeout(300)
        with ctx.wrap_socket(conn, server_side=True) as s:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            header = b""
            while len(header) < 8:
                part = s.recv(8 - len(header))
                if not part:
                    raise SystemExit("tls-server: connection ended before the length")
                header += part
            want = int.from_bytes(header, "big")
            got = 0
            while got < want:
                n = s.recv_into(view, min(CHUNK, want - got))
                if n == 0:
                    break
                got += n
            s.sendall(b"\x01")
            summary = {"bytes": got, "cipher": s.cipher()[0], "version": s.version()}
            try:
                s.recv(1)  # the client closes; bounded by the socket timeout
            except (OSError, ssl.SSLError):
                pass
    summary["vmhwm_kib"] = proc_kib(os.getpid(), "VmHWM")
    print(json.dumps(summary), flush=True)


def python_tls_run(env, tls):
    server = spawn(
        [sys.executable, __file__, "--tls-server", "--tls", tls, "--cert", env.tls_cert, "--key", env.tls_key],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        reader = LineReader(server.stdout)
        port = int(reader.until("READY", 15).split()[1])
        ctx = tls_context(False, tls, env.tls_cert)
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        with open(env.file, "rb", buffering=0) as f:
            t0 = time.perf_counter()
            raw = socket.create_connection(("127.0.0.1", port), timeout=300)
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                cipher, version = s.cipher()[0], s.version()
                s.sendall(env.size.to_bytes(8, "big"))
                while True:
                    n = f.readinto(view)
                    if not n:
                        break
                    s.sendall(view[:n])
                ack = s.recv(1)
                elapsed = time.perf_counter() - t0
        if ack != b"\x01":
            raise BenchError("python TLS server did not acknowledge")
        summary = json.loads(reader.until("{", 30))
        server.wait(timeout=30)
    finally:
        stop(server)
    if summary["bytes"] != env.size:
        raise BenchError(f"python TLS server received {summary['bytes']} bytes, not {env.size}")
    want = TLS12_CIPHER if tls == "1.2" else TLS13_CIPHER
    if tls == "1.2" and (cipher != want or version != "TLSv1.2"):
        raise BenchError(f"TLS 1.2 harness negotiated {version} {cipher}, not TLSv1.2 {want}")
    return {"mbps": env.size / elapsed / 1e6, "rss": summary["vmhwm_kib"], "cipher": f"{version} {cipher}"}


# --------------------------------------------------------------------------
# Set-up done once


class Env:
    pass


def make_file(env):
    print(f"creating a {env.size / MIB:.0f} MiB file of random bytes ...", flush=True)
    h = hashlib.sha256()
    left = env.size
    with open(env.file, "wb") as f:
        while left:
            block = os.urandom(min(MIB, left))
            h.update(block)
            f.write(block)
            left -= len(block)
    env.sha256 = h.hexdigest()
    with open(env.file, "rb", buffering=0) as f:  # warm the page cache
        while f.read(8 * MIB):
            pass
    with open(env.file, "rb") as src, open(env.probe, "wb") as dst:
        dst.write(src.read(4 * MIB))


def make_pki(env):
    env.certs, env.keys = env.tmp / "pki" / "certs", env.tmp / "pki" / "keys"
    r = run([SECURED, "pki", "init", "--certs-dir", env.certs, "--keys-dir", env.keys], 120)
    if r.returncode:
        raise BenchError(f"secured pki init failed: {r.stderr.decode()}")
    r = run([SECURED, "pki", "issue", "--role", "device", "--name", "device-2", "--certs-dir", env.certs,
             "--keys-dir", env.keys], 120)
    if r.returncode:
        raise BenchError(f"secured pki issue failed: {r.stderr.decode()}")


def make_tls_cert(env):
    env.tls_cert, env.tls_key = str(env.tmp / "srv.pem"), str(env.tmp / "srv.key")
    r = run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "2",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", env.tls_key, "-out", env.tls_cert],
        60,
    )
    if r.returncode:
        raise BenchError(f"openssl req failed: {r.stderr.decode()}")


def s_server(env, port, extra):
    # s_server ends the connection when its stdin reaches EOF: give it a pipe
    # that stays open.
    return spawn(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", env.tls_cert, "-key", env.tls_key,
         "-tls1_2", "-cipher", TLS12_CIPHER, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def s_client_cmd(port, quiet):
    # -quiet implies -ign_eof (would hang at EOF): -no_ign_eof after it undoes
    # that. -nocommands: otherwise a buffer of random bytes starting with
    # Q, R or K is taken as quit / renegotiate / key update.
    return ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2", "-cipher", TLS12_CIPHER,
            *(["-quiet"] if quiet else []), "-no_ign_eof", "-nocommands"]


def check_openssl_cipher(env):
    """One probe connection without -quiet: the cipher really is AES256-SHA256
    and 4 MiB arrive."""
    port = free_port()
    out_path = env.tmp / "s_server.out"
    with open(out_path, "wb") as out:
        server = spawn(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", env.tls_cert, "-key", env.tls_key,
             "-tls1_2", "-cipher", TLS12_CIPHER, "-quiet", "-naccept", "1"],
            stdin=subprocess.PIPE, stdout=out, stderr=subprocess.DEVNULL,
        )
    try:
        wait_listening(port, server, "openssl s_server")
        with open(env.probe, "rb") as stdin:
            r = run(s_client_cmd(port, quiet=False), 60, stdin=stdin)
        server.wait(timeout=30)
    finally:
        stop(server)
    text = r.stdout.decode(errors="replace")
    if "Cipher is AES256-SHA256" not in text or not re.search(r"Cipher\s*:\s*AES256-SHA256", text):
        raise BenchError("openssl s_client did not negotiate AES256-SHA256:\n" + text[-2000:])
    if "Protocol  : TLSv1.2" not in text:
        raise BenchError("openssl s_client did not negotiate TLS 1.2")
    got = out_path.stat().st_size
    if got != 4 * MIB:
        raise BenchError(f"openssl s_server received {got} bytes of the 4 MiB probe")
    print("openssl s_client/s_server: TLSv1.2 AES256-SHA256 negotiated, probe delivered", flush=True)


def start_sshd(env):
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.isabs(sshd) or not os.path.exists(sshd):
        raise BenchError("sshd not found")
    d = env.tmp / "ssh"
    d.mkdir()
    for name in ("host_key", "client_key"):
        r = run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", d / name], 30)
        if r.returncode:
            raise BenchError(f"ssh-keygen failed: {r.stderr.decode()}")
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    env.ssh_key = d / "client_key"
    env.ssh_port = free_port()
    config = d / "sshd_config"
    config.write_text(
        f"""ListenAddress 127.0.0.1
Port {env.ssh_port}
HostKey {d / 'host_key'}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {d / 'authorized_keys'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Ciphers {SSH_CIPHER},aes256-gcm@openssh.com
MACs {SSH_MAC}
Compression no
LogLevel ERROR
"""
    )
    os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory
    r = run([sshd, "-t", "-f", config], 30)
    if r.returncode:
        raise BenchError(f"sshd -t refused the config: {r.stderr.decode()}")
    env.sshd = spawn([sshd, "-D", "-e", "-f", config], stdout=subprocess.DEVNULL,
                     stderr=open(d / "sshd.log", "wb"))
    wait_listening(env.ssh_port, env.sshd, "sshd")
    # Probe: the cipher and MAC really are the ones asked for, and bytes arrive.
    with open(env.probe, "rb") as stdin:
        r = run(ssh_cmd(env, "wc -c", verbose=True), 60, stdin=stdin)
    err = r.stderr.decode(errors="replace")
    if r.returncode or r.stdout.decode().strip() != str(4 * MIB):
        raise BenchError(f"ssh probe failed (status {r.returncode}): {err[-2000:]}")
    for direction in ("client->server", "server->client"):
        if f"kex: {direction} cipher: {SSH_CIPHER} MAC: {SSH_MAC}" not in err:
            raise BenchError(f"ssh did not negotiate {SSH_CIPHER} + {SSH_MAC} for {direction}")
    print(f"ssh: {SSH_CIPHER} + {SSH_MAC} negotiated, probe delivered", flush=True)


def ssh_cmd(env, remote, verbose=False):
    return ["ssh", "-F", "/dev/null", *(["-v"] if verbose else []), "-p", str(env.ssh_port), "-i", env.ssh_key,
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "Compression=no", "-o", "LogLevel=" + ("DEBUG1" if verbose else "ERROR"),
            "-c", SSH_CIPHER, "-m", SSH_MAC, "root@127.0.0.1", remote]


# --------------------------------------------------------------------------
# secured server


class SecuredServer:
    def __init__(self, env, tag, crypto="aws-lc", extra=()):
        self.data = Path(tempfile.mkdtemp(prefix=f"data-{tag}-", dir=env.shm))
        self.log = env.tmp / f"serve-{tag}.log"
        self.proc = spawn(
            [SECURED, "--crypto", crypto, "serve", "--listen", "127.0.0.1:0", "--cert", env.certs / "server.pem",
             "--key", env.keys / "server.key", "--ca", env.certs / "ca.pem", "--data-dir", self.data,
             "--log-format", "json", *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"),
        )
        self.addr = None
        deadline = time.monotonic() + 15
        while self.addr is None:
            for event in self.events():
                if event.get("message") == "listening":
                    self.addr = event["addr"]
            if self.addr:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"secured serve did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.02)

    def events(self):
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def kib(self, field):
        return proc_kib(self.proc.pid, field)

    def stop(self):
        hwm = self.kib("VmHWM")
        stop(self.proc)
        shutil.rmtree(self.data, ignore_errors=True)
        return hwm


def conn_args(env):
    return ["--certs-dir", env.certs, "--keys-dir", env.keys]


# --------------------------------------------------------------------------
# Measurements: each returns a dict for one run


def m_tcp(env):
    port = free_port()
    server = spawn(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", port], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, server, "iperf3 -s")
        r = run(["iperf3", "-c", "127.0.0.1", "-p", port, "-n", env.size, "-J"], env.timeout)
        server.wait(timeout=30)
    finally:
        stop(server)
    report = json.loads(r.stdout)
    if r.returncode or "error" in report:
        raise BenchError(f"iperf3 failed: {report.get('error', r.stderr.decode())}")
    return {"mbps": report["end"]["sum_received"]["bits_per_second"] / 8 / 1e6}


def m_secured(env):
    server = SecuredServer(env, "send")
    try:
        rss_file = env.tmp / "device.rss"
        cmd = ["/usr/bin/time", "-f", "%M", "-o", rss_file, SECURED, "device", "send-file", "--server", server.addr,
               "--server-name", "localhost", "--cert", env.certs / "device-1.pem", "--key",
               env.keys / "device-1.key", "--ca", env.certs / "ca.pem", "--kind", "video", "--json", env.file]
        t0 = time.perf_counter()
        r = run(cmd, env.timeout)
        elapsed = time.perf_counter() - t0
        stored = [e for e in server.events() if e.get("message") == "file stored"]
        hwm = server.stop()
    finally:
        server.stop()
    if r.returncode:
        raise BenchError(f"secured device send-file failed ({r.returncode}): {r.stderr.decode()[-2000:]}")
    report = json.loads(r.stdout)["files"][0]
    if report.get("verified") is not True:
        raise BenchError(f"secured did not verify the transfer: {report}")
    if report["sha256"] != env.sha256 or report["server_sha256"] != env.sha256 or report["size"] != env.size:
        raise BenchError(f"secured hashes differ from the file's {env.sha256}: {report}")
    if not stored or stored[-1].get("sha256") != env.sha256:
        raise BenchError(f"the server's log does not show the file stored with sha256 {env.sha256}")
    device = int(rss_file.read_text().split()[-1])
    return {"mbps": env.size / elapsed / 1e6, "rss": hwm, "rss_device": device}


def device_cmd(env, server, name):
    return [SECURED, "device", "--server", server.addr, "--server-name", "localhost", "--cert",
            env.certs / f"{name}.pem", "--key", env.keys / f"{name}.key", "--ca", env.certs / "ca.pem"]


def m_secured_fetch(env):
    """device-1 sends the file shared with device-2, then device-2 fetches it
    (verified): both through the CLI, in the same run."""
    server = SecuredServer(env, "fetch")
    out = Path(tempfile.mkdtemp(prefix="fetch-", dir=env.shm))
    try:
        t0 = time.perf_counter()
        r = run(device_cmd(env, server, "device-1") + ["send-file", "--kind", "video", "--share", "device-2",
                                                      "--store-as", "clip.mp4", "--json", env.file], env.timeout)
        send_secs = time.perf_counter() - t0
        if r.returncode:
            raise BenchError(f"secured device send-file failed ({r.returncode}): {r.stderr.decode()[-2000:]}")
        rss_file = env.tmp / "fetch.rss"
        cmd = ["/usr/bin/time", "-f", "%M", "-o", rss_file] + device_cmd(env, server, "device-2") + [
            "fetch", "clip.mp4", "--from", "device-1", "-o", out / "clip.mp4", "--json"]
        t0 = time.perf_counter()
        r = run(cmd, env.timeout)
        elapsed = time.perf_counter() - t0
        if r.returncode:
            raise BenchError(f"secured device fetch failed ({r.returncode}): {r.stderr.decode()[-2000:]}")
        report = json.loads(r.stdout)
        if report.get("verified") is not True or report["sha256"] != env.sha256 or report["size"] != env.size:
            raise BenchError(f"secured did not verify the download: {report}")
        if (out / "clip.mp4").stat().st_size != env.size:
            raise BenchError("the downloaded file has the wrong size")
        hwm = server.stop()
    finally:
        server.stop()
        shutil.rmtree(out, ignore_errors=True)
    device = int(rss_file.read_text().split()[-1])
    return {"mbps": env.size / elapsed / 1e6, "send_mbps": env.size / send_secs / 1e6, "rss": hwm,
            "rss_device": device}


def m_tls12_openssl(env):
    port = free_port()
    server = s_server(env, port, ["-quiet", "-naccept", "1"])
    try:
        wait_listening(port, server, "openssl s_server")
        with PeakSampler(lambda: [server.pid]) as peak, open(env.file, "rb") as stdin:
            t0 = time.perf_counter()
            r = run(s_client_cmd(port, quiet=True), env.timeout, stdin=stdin)
            server.wait(timeout=60)  # -naccept 1: it exits once it has read everything
            elapsed = time.perf_counter() - t0
    finally:
        stop(server)
    if r.returncode or server.returncode:
        raise BenchError(f"s_client ({r.returncode}) / s_server ({server.returncode}) failed: {r.stderr.decode()[-1000:]}")
    return {"mbps": env.size / elapsed / 1e6, "rss": peak.peak}


def m_tls12_python(env):
    return python_tls_run(env, "1.2")


def m_tls13(env):
    return python_tls_run(env, "1.3")


def m_ssh(env):
    with PeakSampler(lambda: descendants(env.sshd.pid), comm="sshd") as peak, open(env.file, "rb") as stdin:
        rss_file = env.tmp / "ssh.rss"
        t0 = time.perf_counter()
        r = run(["/usr/bin/time", "-f", "%M", "-o", rss_file, *ssh_cmd(env, "cat > /dev/null")], env.timeout,
                stdin=stdin)
        elapsed = time.perf_counter() - t0
    if r.returncode:
        raise BenchError(f"ssh failed ({r.returncode}): {r.stderr.decode()[-1000:]}")
    return {"mbps": env.size / elapsed / 1e6, "rss": peak.peak, "rss_client": int(rss_file.read_text().split()[-1])}


def m_handshakes_secured(env, crypto):
    server = SecuredServer(env, f"hs-{crypto}", crypto)
    try:
        r = run([LOAD, "handshakes", "--server", server.addr, "--seconds", env.hs_seconds, "--crypto", crypto,
                 *conn_args(env)], env.hs_seconds + 60)
        hwm = server.stop()
    finally:
        server.stop()
    if r.returncode:
        raise BenchError(f"load handshakes failed: {r.stderr.decode()[-1000:]}")
    res = kv(r.stdout.decode())
    if int(res["failed"]):
        raise BenchError(f"{res['failed']} secured handshakes failed: {r.stderr.decode()[-1000:]}")
    return {"hs": float(res["handshakes"]) / float(res["seconds"]), "rss": hwm}


def m_handshakes_aws(env):
    return m_handshakes_secured(env, "aws-lc")


def m_handshakes_rust(env):
    return m_handshakes_secured(env, "rustcrypto")


def m_handshakes_openssl(env):
    port = free_port()
    server = s_server(env, port, ["-quiet", "-www"])
    try:
        wait_listening(port, server, "openssl s_server -www")
        t0 = time.perf_counter()
        r = run(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-tls1_2", "-cipher", TLS12_CIPHER,
                 "-time", env.hs_seconds], env.hs_seconds + 60)
        elapsed = time.perf_counter() - t0
        hwm = proc_kib(server.pid, "VmHWM")
    finally:
        stop(server)
    m = re.search(r"(\d+) connections in (\d+) real seconds", r.stdout.decode())
    if r.returncode or not m:
        raise BenchError(f"openssl s_time failed: {r.stdout.decode()[-500:]} {r.stderr.decode()[-500:]}")
    # s_time's "real seconds" are whole seconds (and its loop may stop up to
    # 1 s early), so the rate uses the measured wall time of s_time instead.
    return {"hs": int(m.group(1)) / elapsed, "rss": hwm}


def openssl_speed(args):
    """MB/s (10^6 bytes) for 64 KiB blocks from `openssl speed`, one core."""
    out = run(["openssl", "speed", "-elapsed", "-seconds", str(SPEED_SECONDS), "-bytes", "65536", *args],
              timeout=60, text=True).stdout
    last = [line for line in out.splitlines() if line.strip()][-1]
    return float(last.split()[-1].rstrip("k")) * 1000 / 1e6


# Seconds per primitive for `openssl speed` and `load records`.
SPEED_SECONDS = 3


def m_records(env):
    """Record seal/open on one core against `openssl speed` for the same bytes."""
    enc = openssl_speed(["-evp", "aes-256-cbc"])
    dec = openssl_speed(["-decrypt", "-evp", "aes-256-cbc"])
    sha = openssl_speed(["-evp", "sha256"])
    out = run([LOAD, "records", "--seconds", str(SPEED_SECONDS)], timeout=120, text=True).stdout
    ours = kv(out.strip().splitlines()[-1])
    combine = lambda a, b: 1 / (1 / a + 1 / b)
    return {
        "openssl_seal": combine(enc, sha),
        "openssl_open": combine(dec, sha),
        "openssl_seal_open": combine(combine(enc, sha), combine(dec, sha)),
        "seal_batch": float(ours["seal_batch"]),
        "seal_single": float(ours["seal_single"]),
        "open": float(ours["open"]),
        "seal_open": combine(float(ours["seal_batch"]), float(ours["open"])),
        "seal_open_single": combine(float(ours["seal_single"]), float(ours["open"])),
    }


def m_sessions(env):
    # Room for every session: the burst itself is what is measured.
    server = SecuredServer(env, "sessions", extra=["--max-connections", str(env.sessions + 64)])
    load = None
    try:
        time.sleep(0.2)
        before = server.kib("VmRSS")
        load = spawn([LOAD, "sessions", "--server", server.addr, "--count", env.sessions, *conn_args(env)],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines = LineReader(load.stdout)
        t0 = time.perf_counter()
        opened = kv(lines.until("ALL_OPEN", 300))
        wall = time.perf_counter() - t0
        held = server.kib("VmRSS")
        load.stdin.write(b"\n")
        load.stdin.flush()
        closed = kv(lines.until("closed=", 120))
        load.wait(timeout=30)
        errors = load.stderr.read().decode(errors="replace")
        hwm = server.stop()
    finally:
        if load:
            stop(load)
        server.stop()
    n_open, failed = int(opened["opened"]), int(opened["failed"])
    if failed and errors:
        print(f"  sessions: {failed} failed, e.g. {errors.strip().splitlines()[0]}", flush=True)
    return {
        "opened": n_open,
        "failed": failed + int(closed["close_failed"]),
        "seconds": float(opened["seconds"]),
        "wall": wall,
        "rss": hwm,
        "per_session_kib": (held - before) / max(n_open, 1),
    }


MEASUREMENTS = [
    # (key, --only name, label, function)
    ("records", "records", "record layer, one core, 64 KiB records, no I/O", m_records),
    ("tcp", "tcp", "raw TCP ceiling (iperf3)", m_tcp),
    ("secured", "secured", "**secured** send-file, CLI end to end (aws-lc)", m_secured),
    ("fetch", "fetch", "**secured** fetch, CLI end to end, verified (aws-lc)", m_secured_fetch),
    ("tls12-openssl", "tls12-openssl", "OpenSSL TLS 1.2 AES256-SHA256, s_client → s_server", m_tls12_openssl),
    ("tls12-python", "tls12-python", "OpenSSL TLS 1.2 AES256-SHA256, Python ssl both ends", m_tls12_python),
    ("tls13", "tls13", "OpenSSL TLS 1.3 AES-256-GCM, Python ssl both ends", m_tls13),
    ("ssh", "ssh", f"OpenSSH {SSH_CIPHER} + {SSH_MAC}, `cat > /dev/null`", m_ssh),
    ("hs-aws", "handshakes", "**secured** full handshakes (aws-lc), `load handshakes`", m_handshakes_aws),
    ("hs-rust", "handshakes", "**secured** full handshakes (rustcrypto), `load handshakes`", m_handshakes_rust),
    ("hs-openssl", "handshakes", "OpenSSL TLS 1.2 AES256-SHA256, `s_time -new`", m_handshakes_openssl),
    ("sessions", "sessions", "**secured** concurrent sessions", m_sessions),
]


# --------------------------------------------------------------------------
# Report


def fmt_range(values, digits=0):
    med = statistics.median(values)
    text = f"{med:,.{digits}f}"
    if len(values) > 1:
        text += f" [{min(values):,.{digits}f}–{max(values):,.{digits}f}]"
    return text


def mib(kib):
    return "—" if kib is None else f"{kib / 1024:.1f} MiB"


def ratio_of(results, key, base, field):
    """Median over rounds of base/key, both from the same round."""
    pairs = [(b[field], r[field]) for b, r in zip(results.get(base, []), results.get(key, [])) if b and r]
    if not pairs:
        return None
    return statistics.median(b / r for b, r in pairs)


def build_report(env, results):
    n = env.runs
    rows = []
    for key, _, label, _ in MEASUREMENTS:
        runs = results.get(key)
        if not runs:
            continue
        if key == "records":
            med = lambda f: statistics.median(r[f] for r in runs)
            rows.append([f"**secured** record seal+open, one core (seal 8 in lockstep {med('seal_batch'):,.0f}, "
                         f"one by one {med('seal_single'):,.0f}; open {med('open'):,.0f} MB/s)",
                         fmt_range([r["seal_open"] for r in runs]), "—", "—", "1.00×"])
            rows.append(["`openssl speed` aes-256-cbc (enc, dec) + sha256, same bytes, one core",
                         fmt_range([r["openssl_seal_open"] for r in runs]), "—", "—",
                         f"{statistics.median(r['seal_open'] / r['openssl_seal_open'] for r in runs):.2f}×"])
            continue
        if key == "sessions":
            failed = sum(r["failed"] for r in runs)
            label = (f"{label}: {env.sessions:,} at once, {failed} failed, all open in "
                     f"{statistics.median(r['seconds'] for r in runs):.2f} s, "
                     f"{statistics.median(r['per_session_kib'] for r in runs):.1f} KiB/session")
            rss = max(r["rss"] for r in runs if r["rss"])
            rows.append([label, "—", "—", mib(rss), "—"])
            continue
        if key in ("tls13",):
            label += f" ({runs[0]['cipher']})"
        rss_vals = [r["rss"] for r in runs if r.get("rss")]
        rss = mib(max(rss_vals)) if rss_vals else "—"
        if key == "ssh":
            rss = f"{rss} (sshd session, sampled)" if rss_vals else "—"
        if "mbps" in runs[0]:
            ratio = ratio_of(results, key, "secured", "mbps")
            rows.append([label, fmt_range([r["mbps"] for r in runs]), "—", rss,
                         "—" if ratio is None else f"{ratio:.2f}×"])
        else:
            ratio = ratio_of(results, key, "hs-aws", "hs")
            rows.append([label, "—", fmt_range([r["hs"] for r in runs], 0), rss,
                         "—" if ratio is None else f"{ratio:.2f}×"])
    head = ["path", f"MB/s (median of {n})", "handshakes/s", "peak RSS (server)", "secured ÷ this"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines)

    checks = []
    if results.get("records"):
        runs = results["records"]
        batch = statistics.median(r["seal_open"] / r["openssl_seal_open"] for r in runs)
        single = statistics.median(r["seal_open_single"] / r["openssl_seal_open"] for r in runs)
        checks.append(
            f"- record seal+open on one core ≥ 90 % of `openssl speed` aes-256-cbc + sha256 for the same bytes: "
            f"**{'PASS' if batch >= 0.9 else 'MISS'}**, {batch:.0%} with lockstep sealing as the data path does "
            f"({single:.0%} sealing records one by one)")
    else:
        checks.append("- record seal+open ≥ 90 % of `openssl speed`: not measured")
    size_note = "" if env.size == 1 << 30 else f" (measured with {env.size / MIB:.0f} MiB, not 1 GiB)"
    for key, name in (("tls12-openssl", "s_client → s_server"), ("tls12-python", "Python ssl")):
        ratio = ratio_of(results, key, "secured", "mbps")
        if ratio is None:
            checks.append(f"- 1 GiB end to end ≥ 1.2× OpenSSL TLS 1.2 AES256-SHA256 ({name}): not measured")
        else:
            verdict = "PASS" if ratio >= 1.2 else "MISS"
            checks.append(
                f"- 1 GiB end to end ≥ 1.2× OpenSSL TLS 1.2 AES256-SHA256 ({name}): **{verdict}**, "
                f"{ratio:.2f}× (secured {statistics.median(r['mbps'] for r in results['secured']):,.0f} MB/s, "
                f"OpenSSL {statistics.median(r['mbps'] for r in results[key]):,.0f} MB/s){size_note}")
    ratio = ratio_of(results, "hs-openssl", "hs-aws", "hs")
    if ratio is None:
        checks.append("- handshakes/s ≥ 0.5× `openssl s_time -new`: not measured")
    else:
        checks.append(
            f"- handshakes/s ≥ 0.5× `openssl s_time -new`: **{'PASS' if ratio >= 0.5 else 'MISS'}**, {ratio:.2f}× "
            f"(secured aws-lc {statistics.median(r['hs'] for r in results['hs-aws']):,.0f}/s, s_time "
            f"{statistics.median(r['hs'] for r in results['hs-openssl']):,.0f}/s; secured authenticates both sides)")
    if results.get("fetch"):
        runs = results["fetch"]
        ratio = statistics.median(r["mbps"] / r["send_mbps"] for r in runs)
        checks.append(
            f"- fetch of the file within 10 % of send-file of it in the same run: "
            f"**{'PASS' if ratio >= 0.9 else 'MISS'}**, {ratio:.2f}× (fetch "
            f"{statistics.median(r['mbps'] for r in runs):,.0f} MB/s, send "
            f"{statistics.median(r['send_mbps'] for r in runs):,.0f} MB/s; device peak "
            f"{mib(max(r['rss_device'] for r in runs))}){size_note}")
    if results.get("secured"):
        srv = max(r["rss"] for r in results["secured"])
        dev = max(r["rss_device"] for r in results["secured"])
        ok = max(srv, dev) <= 32 * 1024
        checks.append(f"- peak RSS ≤ 32 MiB per side (streaming): **{'PASS' if ok else 'MISS'}**, "
                      f"server {mib(srv)}, device {mib(dev)} (highest of {n} runs){size_note}")
    else:
        checks.append("- peak RSS ≤ 32 MiB per side: not measured")
    if results.get("sessions"):
        runs = results["sessions"]
        failed = sum(r["failed"] for r in runs)
        opened = min(r["opened"] for r in runs)
        ok = failed == 0 and opened == env.sessions
        note = "" if env.sessions == 10000 else f" (only {env.sessions:,} sessions, not 10,000)"
        checks.append(f"- 10,000 concurrent sessions in one burst with zero failures: **{'PASS' if ok else 'MISS'}**, "
                      f"{failed} failed in {n} run(s), server peak {mib(max(r['rss'] for r in runs))}{note}")
    else:
        checks.append("- 10,000 concurrent sessions in one burst with zero failures: not measured")

    notes = [
        f"MB = 10^6 bytes; {env.size:,} bytes ({env.size / MIB:.0f} MiB) of random data from the page cache; "
        f"median of {n} run(s) [min–max]. Ratios are medians of per-round ratios (secured and the peer from the "
        "same round); for the TCP row it is the share of the loopback ceiling.",
        "Throughput times the whole client command: handshake, transfer, and for secured the server's "
        "signature check, storage (tmpfs) and ACK; for s_client until both s_client and s_server "
        "(`-naccept 1`) exited; for Python ssl until the server's one-byte acknowledgement.",
        "Peak RSS is VmHWM: read from /proc before stopping secured and `s_server -www`; sampled every 0.2 s "
        "for s_server `-naccept 1` and the sshd session processes; self-reported by the Python servers "
        "(interpreter included).",
    ]
    return table, checks, notes


def environment(env, args):
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "n/a"

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    rev = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = first_line(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    u = platform.uname()
    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- command: `{os.environ.get('BENCH_COMMAND') or 'python3 bench/compare.py ' + ' '.join(sys.argv[1:])}`",
        f"- secured: {rev}{' with uncommitted changes' if dirty not in ('', 'n/a') else ''}",
        f"- CPU: {cpu}, nproc {len(os.sched_getaffinity(0))}",
        f"- kernel: {u.system} {u.release} {u.machine}",
        f"- {first_line(['openssl', 'version'])}; Python {platform.python_version()} ssl: {ssl.OPENSSL_VERSION}",
        f"- {first_line(['ssh', '-V'])}; {first_line(['iperf3', '--version'])}",
        f"- {first_line(['rustc', '--version'])}",
    ]


# --------------------------------------------------------------------------
# Main


def parse_size(text):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1GiB, 256MiB, 500MB)")
    num, unit, i, _ = m.groups()
    power = "kmgt".index(unit.lower()) + 1 if unit else 0
    base = 1000 if (unit and not i and m.group(4)) else 1024  # KB/MB/GB decimal; K/M/G, KiB/MiB/GiB binary
    size = int(float(num) * base**power)
    if size < MIB:
        raise argparse.ArgumentTypeError("size must be at least 1 MiB")
    return size


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, help="runs per measurement (default: $RUNS or 3)")
    p.add_argument("--size", type=parse_size, help="file size, e.g. 1GiB (default) or 256MiB")
    p.add_argument("--only", help="comma-separated subset of: " + ", ".join(NAMES))
    p.add_argument("--quick", action="store_true", help="--runs 1 --size 256MiB, 3 s handshakes, 200 sessions")
    p.add_argument("--handshake-seconds", type=int, help="duration of each handshake run (default 10)")
    p.add_argument("--sessions", type=int, help="concurrent sessions (default 10000)")
    # The Python ssl harness's server side (internal).
    p.add_argument("--tls-server", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tls", choices=["1.2", "1.3"], help=argparse.SUPPRESS)
    p.add_argument("--cert", help=argparse.SUPPRESS)
    p.add_argument("--key", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tls_server:
        return args
    env_runs = os.environ.get("RUNS")
    args.runs = args.runs or (1 if args.quick else int(env_runs) if env_runs else 3)
    args.size = args.size or (256 * MIB if args.quick else 1 << 30)
    args.handshake_seconds = args.handshake_seconds or (3 if args.quick else 10)
    args.sessions = args.sessions or (1000 if args.quick else 10000)
    if not 1 <= args.runs <= 50:
        p.error("--runs must be between 1 and 50")
    if not 1 <= args.handshake_seconds <= 600:
        p.error("--handshake-seconds must be between 1 and 600")
    if not 1 <= args.sessions <= 20000:
        p.error("--sessions must be between 1 and 20000")
    args.only = set(NAMES) if not args.only else {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = args.only - set(NAMES)
    if unknown:
        p.error(f"unknown --only names: {', '.join(sorted(unknown))} (known: {', '.join(NAMES)})")
    return args


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv):
    args = parse_args(argv)
    if args.tls_server:
        tls_server_main(args)
        return 0
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    # 10,000 sessions need more than the usual 1,024 descriptors; children inherit it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        pass
    for binary in (SECURED, LOAD):
        if not binary.exists():
            raise SystemExit(f"{binary} is missing: run bench/compare.sh (it builds it)")

    env = Env()
    env.runs, env.size, env.hs_seconds, env.sessions = args.runs, args.size, args.handshake_seconds, args.sessions
    env.timeout = 60 + env.size / 2e6  # at least 2 MB/s, or the run fails
    env.tmp = Path(tempfile.mkdtemp(prefix="secured-bench-"))
    env.shm = Path(tempfile.mkdtemp(prefix="secured-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else env.tmp))
    env.file, env.probe = env.tmp / "bench.bin", env.tmp / "probe.bin"
    env.sshd = None
    only = args.only
    selected = [m for m in MEASUREMENTS if m[1] in only]
    results = {}
    try:
        if only & {"tcp", "secured", "fetch", "tls12-openssl", "tls12-python", "tls13", "ssh"}:
            make_file(env)
        if only & {"secured", "fetch", "handshakes", "sessions"}:
            make_pki(env)
        if only & {"tls12-openssl", "tls12-python", "tls13", "handshakes"}:
            make_tls_cert(env)
        if only & {"tls12-openssl", "handshakes"}:
            if not env.probe.exists():  # no transfer file to take it from
                env.probe.write_bytes(os.urandom(4 * MIB))
            check_openssl_cipher(env)
        if "ssh" in only:
            start_sshd(env)
        for i in range(env.runs):
            for key, _, label, fn in selected:
                print(f"[run {i + 1}/{env.runs}] {key} ...", end=" ", flush=True)
                res = fn(env)
                results.setdefault(key, []).append(res)
                shown = {k: round(v, 1) if isinstance(v, float) else v for k, v in res.items()}
                print(", ".join(f"{k}={v}" for k, v in shown.items()), flush=True)
        table, checks, notes = build_report(env, results)
        info = environment(env, args)
        text = "\n".join([table, "", "Targets:", *checks, "", *notes])
        print("\n" + text + "\n\n" + "\n".join(info))
        RESULTS_MD.write_text(
            "# secured side by side (bench/compare.sh)\n\n" + "\n".join(info) + "\n\n" + text + "\n"
        )
        print(f"\nwritten to {RESULTS_MD.relative_to(REPO)}")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    except BenchError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    finally:
        kill_all_children()
        shutil.rmtree(env.tmp, ignore_errors=True)
        shutil.rmtree(env.shm, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
