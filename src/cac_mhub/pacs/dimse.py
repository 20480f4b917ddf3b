"""DIMSE adapter (C-FIND, C-GET or C-MOVE, C-STORE) on pynetdicom: what every hospital PACS speaks.

Study Root queries, hierarchical (study, then series, then image level with the series UID), so
strict PACS answer too. Metadata before pixels: an IMAGE-level C-FIND asks for exactly the
attributes series selection reads (:data:`~.base.SELECTION_KEYWORDS`). Retrieval is C-GET (one
association, nothing to configure on the PACS) or C-MOVE to our own storage SCP, started for the
retrieve on ``scp_port`` under ``calling_aet`` (the PACS must know that AE: host and port).
Every association has timeouts; failures become one line naming ``AET@host:port``.
"""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from .base import SELECTION_KEYWORDS, SeriesInfo, StudyQuery
from .config import DimseEndpoint
from .errors import PacsAuthError, PacsRejected, PacsUnavailable

log = logging.getLogger("cac_mhub.pacs")

FIND, GET, MOVE = (StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet,
                   StudyRootQueryRetrieveInformationModelMove)
PENDING = (0xFF00, 0xFF01)
#: What we retrieve: single-frame CT only (the only class series selection accepts).
RETRIEVED_CLASSES = (CTImageStorage,)


class DimsePacs:
    """A PACS over DIMSE (see :class:`~.base.Pacs`)."""

    name = "dimse"

    def __init__(self, endpoint: DimseEndpoint) -> None:
        self.endpoint = endpoint
        self.where = endpoint.where

    # -- associations ------------------------------------------------------------------------

    def _ae(self) -> AE:
        ae = AE(ae_title=self.endpoint.calling_aet)
        timeout = self.endpoint.timeout_s
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        ae.connection_timeout = min(10.0, timeout)
        return ae

    def _tls(self) -> tuple[ssl.SSLContext, str] | None:
        if not self.endpoint.tls:
            return None
        context = ssl.create_default_context(cafile=self.endpoint.ca_bundle)
        return context, self.endpoint.host

    def _associate(self, ae: AE, what: str, **kwargs: Any) -> Any:
        try:
            assoc = ae.associate(self.endpoint.host, self.endpoint.port, ae_title=self.endpoint.called_aet,
                                 tls_args=self._tls(), **kwargs)
        except (OSError, ssl.SSLError) as error:
            raise PacsUnavailable(f"PACS not reachable at {self.where} ({type(error).__name__} during {what})") from None
        if assoc.is_established:
            return assoc
        if assoc.is_rejected:
            raise PacsAuthError(f"PACS rejected the association (calling AE {self.endpoint.calling_aet}) at {self.where}")
        raise PacsUnavailable(f"PACS not reachable at {self.where} (no association during {what})")

    def _find(self, identifier: Dataset, what: str) -> Iterator[Dataset]:
        ae = self._ae()
        ae.add_requested_context(FIND)
        assoc = self._associate(ae, what)
        try:
            for status, answer in assoc.send_c_find(identifier, FIND):
                code = getattr(status, "Status", None)
                if code is None:
                    raise PacsUnavailable(f"PACS connection lost at {self.where} during {what}")
                if code in PENDING:
                    if answer is not None:
                        yield answer
                elif code != 0x0000:
                    raise PacsRejected(f"PACS refused {what} (status 0x{code:04X}) at {self.where}")
        finally:
            assoc.release()

    # -- queries -----------------------------------------------------------------------------

    def find_studies(self, query: StudyQuery) -> list[str]:
        uids: dict[str, None] = {}
        for filters in query.variants():
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = ""
            ds.StudyDate = ""
            for keyword, value in filters.items():
                setattr(ds, keyword, value)
            for answer in self._find(ds, "study query (C-FIND)"):
                uid = str(answer.get("StudyInstanceUID", "") or "")
                if uid:
                    uids[uid] = None
        return list(uids)

    def find_series(self, study_uid: str, modality: str | None) -> list[SeriesInfo]:
        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = ""
        ds.Modality = modality or ""
        ds.SeriesDescription = ""
        ds.SeriesNumber = None
        out = []
        for answer in self._find(ds, "series query (C-FIND)"):
            uid = str(answer.get("SeriesInstanceUID", "") or "")
            number = answer.get("SeriesNumber")
            series_modality = str(answer.get("Modality", "") or "")
            if uid and (not modality or series_modality in ("", modality)):
                out.append(SeriesInfo(study_uid=study_uid, uid=uid, modality=series_modality,
                                      description=str(answer.get("SeriesDescription", "") or ""),
                                      number=int(number) if number not in (None, "") else None))
        return out

    def series_headers(self, series: SeriesInfo) -> list[Any]:
        ds = Dataset()
        ds.QueryRetrieveLevel = "IMAGE"
        for keyword in SELECTION_KEYWORDS:
            setattr(ds, keyword, None)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = series.study_uid, series.uid
        headers = []
        for answer in self._find(ds, "image query (C-FIND)"):
            # series-level values a strict PACS leaves out at IMAGE level
            if not answer.get("Modality") and series.modality:
                answer.Modality = series.modality
            for keyword in ("QueryRetrieveLevel", "RetrieveAETitle"):
                if keyword in answer:
                    delattr(answer, keyword)
            headers.append(answer)
        return headers

    # -- retrieve ----------------------------------------------------------------------------

    def retrieve_series(self, series: SeriesInfo, folder: Path) -> int:
        folder.mkdir(parents=True, exist_ok=True)
        store = _Store(folder)
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "SERIES"
        identifier.StudyInstanceUID, identifier.SeriesInstanceUID = series.study_uid, series.uid
        if self.endpoint.retrieve == "c-get":
            self._c_get(identifier, store)
        else:
            self._c_move(identifier, store)
        if store.errors:
            raise PacsRejected(f"{store.errors} retrieved object(s) could not be written (disk?) from {self.where}")
        return store.count

    def _c_get(self, identifier: Dataset, store: _Store) -> None:
        ae = self._ae()
        ae.add_requested_context(GET)
        roles = []
        for sop_class in RETRIEVED_CLASSES:
            ae.add_requested_context(sop_class, ALL_TRANSFER_SYNTAXES)
            roles.append(build_role(sop_class, scp_role=True))
        assoc = self._associate(ae, "series retrieve (C-GET)", ext_neg=roles,
                                evt_handlers=[(evt.EVT_C_STORE, store.handle)])
        try:
            self._check_retrieve(assoc.send_c_get(identifier, GET), "C-GET")
        finally:
            assoc.release()

    def _c_move(self, identifier: Dataset, store: _Store) -> None:
        scp = self._ae()
        for sop_class in RETRIEVED_CLASSES:
            scp.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        try:
            server = scp.start_server((self.endpoint.scp_bind, self.endpoint.scp_port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, store.handle)])
        except OSError as error:
            raise PacsRejected(f"our storage SCP cannot listen on port {self.endpoint.scp_port} "
                               f"({error.strerror or type(error).__name__}); set pacs.dimse.scp_port") from None
        try:
            ae = self._ae()
            ae.add_requested_context(MOVE)
            assoc = self._associate(ae, "series retrieve (C-MOVE)")
            try:
                self._check_retrieve(assoc.send_c_move(identifier, self.endpoint.calling_aet, MOVE), "C-MOVE")
            finally:
                assoc.release()
        finally:
            server.shutdown()

    def _check_retrieve(self, responses: Any, what: str) -> None:
        final = None
        for status, _ in responses:
            code = getattr(status, "Status", None)
            if code is None:
                raise PacsUnavailable(f"PACS connection lost at {self.where} during {what}")
            final = status
        if final is None:
            raise PacsUnavailable(f"no answer from {self.where} to {what}")
        code = final.Status
        failed = int(final.get("NumberOfFailedSuboperations", 0) or 0)
        if code == 0xA801:
            raise PacsRejected(f"PACS does not know our AE {self.endpoint.calling_aet} as a {what} destination "
                               f"at {self.where} (add it with host and scp_port)")
        if code not in (0x0000, 0xB000) or failed:
            raise PacsRejected(f"{what} failed (status 0x{code:04X}, {failed} failed sub-operation(s)) at {self.where}")

    # -- store -------------------------------------------------------------------------------

    def store(self, paths: Sequence[Path], study_uid: str) -> None:
        datasets = [pydicom.dcmread(p) for p in paths]
        ae = self._ae()
        for ds in datasets:
            if str(ds.StudyInstanceUID) != study_uid:
                raise PacsRejected("an output does not belong to the source study; not pushed")
            syntax = ds.file_meta.TransferSyntaxUID
            ae.add_requested_context(ds.SOPClassUID, [syntax])
        assoc = self._associate(ae, "store (C-STORE)")
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                if code is None:
                    raise PacsUnavailable(f"PACS connection lost at {self.where} during store (C-STORE)")
                if code != 0x0000 and not 0xB000 <= code <= 0xBFFF:
                    raise PacsRejected(f"PACS refused an object (C-STORE status 0x{code:04X}) at {self.where}")
        finally:
            if assoc.is_established:
                assoc.release()

    def stored(self, study_uid: str, objects: Sequence[tuple[str, str]]) -> set[str]:
        held: set[str] = set()
        for series_uid, sop_uid in objects:
            ds = Dataset()
            ds.QueryRetrieveLevel = "IMAGE"
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, series_uid, sop_uid
            for answer in self._find(ds, "image query (C-FIND)"):
                if str(answer.get("SOPInstanceUID", "")) == sop_uid:
                    held.add(sop_uid)
        return held

    def close(self) -> None:
        pass


class _Store:
    """The C-STORE handler of a retrieve: each received instance becomes a file in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0
        self.errors = 0
        self.lock = threading.Lock()

    def handle(self, event: Any) -> int:
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            sop = str(ds.get("SOPInstanceUID", "") or "")
            name = "".join(c if c.isalnum() or c in ".-" else "_" for c in sop)[:120] or f"instance{self.count}"
            ds.save_as(self.folder / f"{name}.dcm", enforce_file_format=True)
        except Exception:  # noqa: BLE001 - refuse the instance (0xA700), the retrieve reports it
            log.debug("retrieved instance not written", exc_info=True)
            with self.lock:
                self.errors += 1
            return 0xA700
        with self.lock:
            self.count += 1
        return 0x0000
