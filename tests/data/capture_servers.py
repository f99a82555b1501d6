"""The victim's real servers: sshd, telnetd (inetd), vsftpd, dnsmasq, iodined, http.server, TLS,
and an internal HTTP service on 8081 and 8080 (capture_service.py: health pages, uploads).

A test account (``capuser``, known password, an authorised key) lives only in the servers'
own mount namespaces: each server starts under ``unshare -m`` with copies of /etc/passwd,
/etc/shadow and /etc/group bind-mounted over the real ones, so the machine's accounts are never
touched. Every key, certificate and configuration is generated into a temporary directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgspec

from netmon.app.analysis.corpus.tools import self_signed_cert
from tests.data.capture_net import Host, in_ns, run, stop
from tests.polling import wait_until

log = logging.getLogger(__name__)

USER, UID = "capuser", 4242
PASSWORD = "Blue-Heron-42"  # the one right password; guessers never try it (but hydra's last)
TUNNEL_ZONE, TUNNEL_PASSWORD = "t.tun.test", "tunnelpw"
TUNNEL_SERVER_IP = "10.99.0.1"  # iodined's end of the tunnel, inside the victim
WEB_PAGES = {  # path -> size in bytes: small pages keep the committed captures small
    "index.html": 900,
    "news.html": 6_000,
    "app.js": 12_000,
    "style.css": 3_000,
    "logo.png": 8_000,
    "health": 3,
    "updates/latest.json": 400,
    "updates/feed.xml": 1_500,
    "api/v1/checkin": 64,
}
# The resolver's zone. Each web site has its own address of the victim, so a meter's passive
# DNS maps every address to its own name; TLS names are the victim's main address. Any other
# name gets an address nobody has (looked up, never connected to).
SITES = (
    "www.wikipedia.org",
    "intranet.corp.test",
    "mail.corp.test",
    "news.bbc.co.uk",
    "docs.python.org",
    "github.com",
    "www.debian.org",
    "cdn.jsdelivr.net",
    "api.weather.example.com",
    "wiki.corp.test",
    "fonts.gstatic.com",
    "shop.example.org",
)
TLS_NAMES = (
    "portal.corp.test",
    "vpn.corp.test",
    "login.office.example.net",
    "accounts.example.org",
)
NOBODY_IPV4, NOBODY_IPV6 = "10.20.0.250", "fd00:20::250"
SERVICE_PORT = 8081  # the internal HTTP service: in no scan's port list, so no scan finds it
# The same service on the usual alternative HTTP port: the fresh set floods it (a flood hits a
# listening service, whose kernel answers each SYN) and its top-100 connect scan finds it open.
ALT_PORT = 8080


class Victim(msgspec.Struct, frozen=True):
    """What the clients need to know about the running servers."""

    host: Host
    root: Path  # the temporary directory with keys and configuration
    client_key: Path  # private key authorised for USER
    pages: tuple[str, ...]

    @property
    def ip(self) -> str:
        return self.host.ipv4

    def site_address(self, name: str) -> str:
        """The IPv4 address the resolver gives for a web site or TLS name."""
        return zone(self.host)[name]


def zone(victim: Host) -> dict[str, str]:
    """Name -> IPv4 address, as the victim's resolver answers (every name also has an AAAA)."""
    records = {name: victim.extra_ipv4[index] for index, name in enumerate(SITES)}
    records.update({name: victim.ipv4 for name in TLS_NAMES})
    return records


class ServerMissing(Exception):
    """A server program is not installed or did not come up."""


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def _accounts(root: Path) -> dict[str, Path]:
    """Copies of passwd, shadow and group with USER added; the files to bind over /etc."""
    home = root / "home"
    home.mkdir(mode=0o755)
    os.chown(home, UID, UID)
    hashed = subprocess.run(
        ["openssl", "passwd", "-6", "-salt", "netmoncap", PASSWORD],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    etc = root / "etc"
    files = {
        "passwd": f"{USER}:x:{UID}:{UID}:capture test user:{home}:/bin/bash\n",
        "shadow": f"{USER}:{hashed}:20000:0:99999:7:::\n",
        "group": f"{USER}:x:{UID}:\n",
    }
    binds = {}
    for name, line in files.items():
        binds[f"/etc/{name}"] = _write(etc / name, Path("/etc", name).read_text() + line, 0o644)
    binds["/etc/shadow"].chmod(0o640)
    # login(1) in a container cannot write /proc/self/loginuid; the stock PAM stack requires it.
    login = Path("/etc/pam.d/login").read_text()
    login = login.replace("required     pam_loginuid.so", "optional     pam_loginuid.so")
    binds["/etc/pam.d/login"] = _write(etc / "pam.login", login)
    return binds


def _with_accounts(binds: dict[str, Path], args: list[str]) -> list[str]:
    """args run in a private mount namespace that sees the test account."""
    mounts = " && ".join(f"mount --bind {src} {dst}" for dst, src in binds.items())
    return ["unshare", "-m", "sh", "-c", f'{mounts} && exec "$@"', "sh", *args]


def _keys(root: Path) -> tuple[Path, Path]:
    """An ssh host key and a client key pair (the public half authorised for USER)."""
    host_key, client_key = root / "ssh_host_ed25519_key", root / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)], check=True
        )
    shutil.copy(f"{client_key}.pub", root / "authorized_keys")
    return host_key, client_key


def _sshd(root: Path, host_key: Path) -> list[str]:
    config = _write(
        root / "sshd_config",
        "ListenAddress 0.0.0.0\nListenAddress ::\nPort 22\n"
        f"HostKey {host_key}\nPidFile none\nUsePAM no\n"
        "PasswordAuthentication yes\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        f"AuthorizedKeysFile {root}/authorized_keys\n"
        # the key file is under /tmp (world-writable): strict modes would refuse it
        "StrictModes no\nPermitRootLogin no\nSubsystem sftp internal-sftp\n",
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory sshd insists on
    return [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(config)]


def _telnetd(root: Path) -> list[str]:
    telnetd = shutil.which("telnetd") or "/usr/sbin/telnetd"
    config = _write(
        root / "inetd.conf",
        f"telnet stream tcp nowait root {telnetd} telnetd\n",
    )
    return ["inetutils-inetd", "-d", f"--pidfile={root}/inetd.pid", str(config)]


def _vsftpd(root: Path) -> list[str]:
    Path("/var/run/vsftpd/empty").mkdir(parents=True, exist_ok=True)
    config = _write(
        root / "vsftpd.conf",
        "listen=NO\nlisten_ipv6=YES\nbackground=NO\nanonymous_enable=NO\nlocal_enable=YES\n"
        "write_enable=YES\npam_service_name=vsftpd\nsecure_chroot_dir=/var/run/vsftpd/empty\n"
        # no sandboxes: their namespaces and seccomp filters fail inside a container
        "seccomp_sandbox=NO\nisolate=NO\nisolate_network=NO\n"
        "xferlog_enable=NO\nmax_clients=50\nmax_per_ip=20\n",
        0o600,
    )
    return ["vsftpd", str(config)]


def _dnsmasq(victim: Host) -> list[str]:
    # --local=/#/: no upstream, so other query types get an empty answer instead of REFUSED;
    # only the tunnel zone goes on, to iodined, as a delegated zone would.
    records = [f"--host-record={name},{ip},{victim.ipv6}" for name, ip in zone(victim).items()]
    return [
        "dnsmasq",
        "-k",
        "--no-resolv",
        "--no-hosts",
        "-C",
        "/dev/null",
        "--user=root",
        "--pid-file=",
        "--port=53",
        "--local-ttl=300",
        *records,
        f"--address=/#/{NOBODY_IPV4}",
        f"--address=/#/{NOBODY_IPV6}",
        "--local=/#/",
        f"--server=/{TUNNEL_ZONE}/127.0.0.1#5353",
    ]


def _iodined() -> list[str]:
    # -c: queries arrive through dnsmasq, whose source port changes per query
    return [
        "iodined",
        "-f",
        "-c",
        "-l",
        "127.0.0.1",
        "-p",
        "5353",
        "-P",
        TUNNEL_PASSWORD,
        f"{TUNNEL_SERVER_IP}/27",
        TUNNEL_ZONE,
    ]


def _web(root: Path) -> tuple[list[str], tuple[str, ...]]:
    www = root / "www"
    for name, size in WEB_PAGES.items():
        page = www / name
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_bytes(os.urandom(size // 2).hex().encode()[:size])
    args = [sys.executable, "-m", "http.server", "--bind", "::", "--directory", str(www), "80"]
    return args, tuple(WEB_PAGES)


def _service(root: Path, port: int) -> list[str]:
    """The internal HTTP service over the web pages (they are written by _web first)."""
    script = Path(__file__).with_name("capture_service.py")
    return [sys.executable, str(script), str(port), str(root / "www")]


def _tls(root: Path) -> list[str]:
    key, cert = self_signed_cert(root, "portal.corp.test", days=2)
    # a bare port: one dual-stack socket (an address would bind one family only)
    return ["openssl", "s_server", "-accept", "443", "-key", str(key), "-cert", str(cert)] + [
        "-www",
        "-quiet",
    ]


def _listening(ns: str, proto: str, port: int) -> bool:
    out = run(ns, ["ss", "-H", "-ln", f"-{proto}", f"sport = :{port}"]).stdout
    return bool(out.strip())


@contextlib.contextmanager
def victim_servers(host: Host) -> Iterator[Victim]:
    """Every server running in the victim's namespace for the block; all stopped on exit."""
    for program in ("sshd", "inetutils-inetd", "vsftpd", "dnsmasq", "iodined", "openssl"):
        if shutil.which(program) is None and not Path("/usr/sbin", program).exists():
            raise ServerMissing(f"{program} is not installed")
    with tempfile.TemporaryDirectory(prefix="netmon-capture-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # the test user's shell must reach its home below it
        binds = _accounts(root)
        host_key, client_key = _keys(root)
        web, pages = _web(root)
        servers = {
            "sshd": (_with_accounts(binds, _sshd(root, host_key)), ("t", 22)),
            "telnetd": (_with_accounts(binds, _telnetd(root)), ("t", 23)),
            "vsftpd": (_with_accounts(binds, _vsftpd(root)), ("t", 21)),
            "iodined": (_iodined(), ("u", 5353)),
            "dnsmasq": (_dnsmasq(host), ("u", 53)),
            "http.server": (web, ("t", 80)),
            "service": (_service(root, SERVICE_PORT), ("t", SERVICE_PORT)),
            "service-alt": (_service(root, ALT_PORT), ("t", ALT_PORT)),
            "s_server": (_tls(root), ("t", 443)),
        }
        procs: list[subprocess.Popen[bytes]] = []
        logs = root / "logs"
        logs.mkdir()
        try:
            for name, (args, (proto, port)) in servers.items():
                with open(logs / f"{name}.log", "wb") as out:
                    proc = subprocess.Popen(in_ns(host.ns, args), stdout=out, stderr=out)
                procs.append(proc)
                _await(host.ns, name, proc, proto, port, logs / f"{name}.log")
            log.info("victim servers up: %s", ", ".join(servers))
            yield Victim(host=host, root=root, client_key=client_key, pages=pages)
        finally:
            for proc in reversed(procs):
                stop(proc)


def _await(
    ns: str, name: str, proc: subprocess.Popen[bytes], proto: str, port: int, log_file: Path
) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise ServerMissing(f"{name} exited: {log_file.read_text(errors='replace')[-400:]}")
        return _listening(ns, proto, port)

    wait_until(ready, timeout=15, what=f"{name} listening on {port}/{proto}", interval=0.1)
