"""DICOMweb adapter (QIDO-RS, WADO-RS, STOW-RS) on dicomweb-client, with our auth and TLS settings.

dicomweb-client does the protocol (multipart, DICOM JSON, retries on 429/503/504); this file
adds what a hospital deployment needs: HTTP basic or bearer auth from secrets read at connect
time, TLS verified by default (a CA bundle option), timeouts on every request, and errors turned
into one line that names the base URL only (a query string may carry a PatientID).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from .base import SeriesInfo, StudyQuery
from .config import DicomWebEndpoint
from .errors import PacsError, PacsRejected, PacsUnavailable, http_error

log = logging.getLogger("cac_mhub.pacs")
T = TypeVar("T")

STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
PAGE = 200
"""Studies asked for per QIDO-RS request. dicomweb-client's get_remaining is not used: a server
that ignores ``offset`` (Orthanc's plugin of Debian 12) would make it loop for ever."""


class _BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer <token>`` on every request (the token is never logged)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "_BearerAuth(***)"


def make_session(endpoint: DicomWebEndpoint) -> requests.Session:
    """A requests session with the endpoint's auth and TLS verification (secrets read here)."""
    session = requests.Session()
    if endpoint.auth == "basic":
        session.auth = (endpoint.username or "", endpoint.password())
    elif endpoint.auth == "bearer":
        session.auth = _BearerAuth(endpoint.token())
    session.verify = endpoint.verify_setting()
    session.trust_env = False  # no proxy or netrc credentials picked up behind our back
    return session


class DicomWebPacs:
    """A PACS over DICOMweb (see :class:`~.base.Pacs`)."""

    name = "dicomweb"

    def __init__(self, endpoint: DicomWebEndpoint) -> None:
        self.where = endpoint.url.rstrip("/")
        if not endpoint.verify and endpoint.url.startswith("https://"):
            log.warning("TLS certificates of %s are NOT verified (pacs.dicomweb.verify: false)", self.where)
        self.session = make_session(endpoint)
        self.client = DICOMwebClient(self.where, session=self.session,
                                     timeout=(min(10.0, endpoint.timeout_s), endpoint.timeout_s))
        self.client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=200)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except requests.HTTPError as error:
            status = error.response.status_code if error.response is not None else 0
            raise http_error(status, self.where, what) from None
        except requests.exceptions.SSLError as error:
            raise PacsUnavailable(f"TLS verification failed at {self.where} ({type(error).__name__}); "
                                  "set pacs.dicomweb.ca_bundle to the hospital CA") from None
        except (requests.ConnectionError, requests.Timeout) as error:
            kind = "timed out" if isinstance(error, requests.Timeout) else "connection failed"
            raise PacsUnavailable(f"PACS not reachable at {self.where} ({kind} during {what})") from None
        except PacsError:
            raise
        except (ValueError, KeyError, TypeError, OSError) as error:
            raise PacsRejected(f"unexpected answer from {self.where} during {what} ({type(error).__name__})") from None

    def find_studies(self, query: StudyQuery) -> list[str]:
        uids: dict[str, None] = {}
        for filters in query.variants():
            offset = 0
            while True:  # pages of PAGE; stops on a short page or one with nothing new (offset ignored)
                found = self._call("study query (QIDO-RS)", lambda: self.client.search_for_studies(
                    search_filters=filters, offset=offset, limit=PAGE))
                new = [uid for uid in (_value(item, STUDY_UID) for item in found) if uid and uid not in uids]
                uids.update(dict.fromkeys(new))
                if len(found) < PAGE or not new:
                    break
                offset += len(found)
        return list(uids)

    def find_series(self, study_uid: str, modality: str | None) -> list[SeriesInfo]:
        filters = {"Modality": modality} if modality else None
        found = self._call("series query (QIDO-RS)", lambda: self.client.search_for_series(
            study_uid, search_filters=filters))
        out = []
        for item in found:
            number = _value(item, "00200011")
            out.append(SeriesInfo(study_uid=study_uid, uid=_value(item, SERIES_UID) or "",
                                  modality=_value(item, "00080060") or "", description=_value(item, "0008103E") or "",
                                  number=int(number) if number not in (None, "") else None))
        return [s for s in out if s.uid and (not modality or s.modality in ("", modality))]

    def series_headers(self, series: SeriesInfo) -> list[Any]:
        items = self._call("series metadata (WADO-RS)", lambda: self.client.retrieve_series_metadata(
            series.study_uid, series.uid))
        headers = []
        for item in items:
            ds = Dataset.from_json(item, bulk_data_uri_handler=lambda *_: b"")
            for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
                if keyword in ds:
                    del ds[keyword]  # metadata only: bulk data is referenced, never fetched here
            headers.append(ds)
        return headers

    def retrieve_series(self, series: SeriesInfo, folder: Path) -> int:
        folder.mkdir(parents=True, exist_ok=True)

        def fetch() -> int:
            count = 0
            for ds in self.client.iter_series(series.study_uid, series.uid):
                sop = str(ds.get("SOPInstanceUID", "") or f"instance{count}")
                pydicom.dcmwrite(folder / f"{_file_name(sop)}.dcm", ds, enforce_file_format=False)
                count += 1
            return count

        return self._call("series retrieve (WADO-RS)", fetch)

    def store(self, paths: Sequence[Path], study_uid: str) -> None:
        datasets = [pydicom.dcmread(p) for p in paths]
        answer = self._call("store (STOW-RS)", lambda: self.client.store_instances(datasets, study_instance_uid=study_uid))
        failed = answer.get("FailedSOPSequence") if answer is not None else None
        if failed:
            reasons = sorted({str(item.get("FailureReason", "?")) for item in failed})
            raise PacsRejected(f"PACS refused {len(failed)} object(s) (STOW-RS failure reason {', '.join(reasons)}) "
                               f"at {self.where}")

    def stored(self, study_uid: str, objects: Sequence[tuple[str, str]]) -> set[str]:
        held: set[str] = set()
        for series_uid in sorted({series for series, _ in objects}):
            found = self._call("instance query (QIDO-RS)", lambda: self.client.search_for_instances(
                study_uid, series_uid))
            held |= {_value(item, SOP_UID) for item in found}
        return {sop for _, sop in objects if sop in held}

    def close(self) -> None:
        self.session.close()


def _value(item: dict[str, Any], tag: str) -> Any:
    values = (item.get(tag) or {}).get("Value") or []
    return values[0] if values else None


def _file_name(uid: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in uid)[:120] or "instance"
