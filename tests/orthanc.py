"""A real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) for the PACS tests, on 127.0.0.1 only.

Each server gets free ports (HTTP, DICOM, and one for our C-MOVE storage SCP that its
DicomModalities names), a temporary storage folder, authentication on with a random password,
remote access off. ``start`` waits (bounded) until it answers; ``stop`` ends it. Tests skip
when the binary or the plugin is absent.
"""

from __future__ import annotations

import io
import json
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable

import pydicom
import pytest
import requests

BINARY = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
AET, OUR_AET, USER = "ORTHANC", "CACMHUB", "cac"


def require_orthanc() -> None:
    if not Path(BINARY).is_file():
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    if not PLUGIN.is_file():
        pytest.skip(f"Orthanc DICOMweb plugin not found at {PLUGIN} (Debian package orthanc-dicomweb)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def self_signed(folder: Path) -> tuple[Path, Path]:
    """(certificate, key + certificate for Orthanc) for 127.0.0.1, made by openssl; skips without it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class TlsRelay:
    """HTTPS in front of Orthanc's HTTP port: Debian's Orthanc 1.10 crashes (SIGSEGV) on its own
    HTTPS with this OpenSSL, so the test's TLS endpoint is Python's ssl relaying to it. The code
    under test sees a real TLS server with a certificate; only the test owns this relay."""

    def __init__(self, target_port: int, cert: Path, key: Path) -> None:
        import ssl
        import threading

        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        import threading

        try:
            secure = self.context.wrap_socket(client, server_side=True)
        except OSError:  # the client refused our certificate: what the test wants to see
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=30)

        def pump(source: socket.socket, sink: socket.socket) -> None:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                for end in (source, sink):
                    try:
                        end.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(upstream, secure), daemon=True).start()
        pump(secure, upstream)

    def close(self) -> None:
        self.closed = True
        self.listener.close()


class Orthanc:
    def __init__(self, root: Path, tls: tuple[Path, Path] | None = None) -> None:
        """``tls``: (certificate, key + certificate) from :func:`self_signed`: HTTPS only."""
        self.root = Path(root)
        self.tls = tls
        self.root.mkdir(parents=True, exist_ok=True)
        self.http_port, self.dicom_port, self.scp_port = free_port(), free_port(), free_port()
        self.password = secrets.token_hex(12)
        self.process: subprocess.Popen[bytes] | None = None
        self.config_path = self.root / "orthanc.json"
        config = {
            "Name": "cac-mhub-test", "StorageDirectory": str(self.root / "db"), "IndexDirectory": str(self.root / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": AET,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": True, "RegisteredUsers": {USER: self.password},
            "Plugins": [str(PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "SeriesMetadata": "Full"},
            "DicomModalities": {"cac": [OUR_AET, "127.0.0.1", self.scp_port]},
            "DicomAlwaysAllowGet": True, "DicomAlwaysAllowMove": True, "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowStore": True, "DicomCheckModalityHost": False,
            "HttpThreadsCount": 10, "ConcurrentJobs": 1, "SaveJobs": False,
        }
        self.relay: TlsRelay | None = None
        self.config_path.write_text(json.dumps(config, indent=1), encoding="utf-8")

    @property
    def plain(self) -> str:
        """Orthanc's own HTTP address: the test's set-up and assertions use it."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def url(self) -> str:
        """The address the code under test is given (HTTPS through the relay with ``tls``)."""
        return f"https://127.0.0.1:{self.relay.port}" if self.relay is not None else self.plain

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self, timeout: float = 30.0) -> Orthanc:
        log = open(self.root / "orthanc.log", "ab")
        self.process = subprocess.Popen([BINARY, str(self.config_path)], stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.root)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}; see {self.root / 'orthanc.log'}")
            try:
                if requests.get(f"{self.plain}/system", auth=(USER, self.password), timeout=2).ok:
                    if self.tls is not None and self.relay is None:
                        self.relay = TlsRelay(self.http_port, *self.tls)
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout:g} s")

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None

    # -- REST helpers (test set-up and assertions, not the code under test) ----------------------

    def _get(self, path: str) -> requests.Response:
        response = requests.get(f"{self.plain}{path}", auth=(USER, self.password), timeout=30)
        response.raise_for_status()
        return response

    def upload(self, paths: Iterable[Path]) -> None:
        with requests.Session() as session:
            session.auth = (USER, self.password)
            for path in paths:
                response = session.post(f"{self.plain}/instances", data=Path(path).read_bytes(), timeout=30)
                response.raise_for_status()

    def find(self, level: str, query: dict[str, str]) -> list[str]:
        response = requests.post(f"{self.plain}/tools/find", auth=(USER, self.password), timeout=30,
                                 json={"Level": level, "Query": query, "Expand": False})
        response.raise_for_status()
        return list(response.json())

    def instances(self, study_uid: str, modality: str) -> list[pydicom.Dataset]:
        """Every instance of ``modality`` in the study, read back as DICOM from Orthanc."""
        out = []
        for series_id in self.find("Series", {"StudyInstanceUID": study_uid, "Modality": modality}):
            for instance in self._get(f"/series/{series_id}/instances").json():
                out.append(pydicom.dcmread(io.BytesIO(self._get(f"/instances/{instance['ID']}/file").content)))
        return out

    def pacs_config(self, retrieve: str = "c-get", **push: Any) -> dict[str, Any]:
        """The ``pacs:`` section cac-mhub needs for this server (password from CAC_TEST_PACS_PASSWORD)."""
        return {
            "use": "dicomweb",
            "dicomweb": {"url": self.dicomweb, "auth": "basic", "username": USER,
                         "password_env": "CAC_TEST_PACS_PASSWORD", "timeout_s": 20},
            "dimse": {"host": "127.0.0.1", "port": self.dicom_port, "called_aet": AET, "calling_aet": OUR_AET,
                      "retrieve": retrieve, "scp_port": self.scp_port, "scp_bind": "127.0.0.1", "timeout_s": 20},
            "push": {"retries": 1, "backoff_s": 0.1, **push},
            "watch": {"interval_s": 0.5, "max_backoff_s": 2.0},
        }


def all_values(ds: Any, keyword: str) -> set[str]:
    """Every value of ``keyword`` anywhere in the dataset, nested sequences included."""
    found: set[str] = set()
    for element in ds.iterall():
        if element.keyword == keyword and element.value:
            found.add(str(element.value))
    return found
