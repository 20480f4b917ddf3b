"""The ``pacs:`` section of a config: endpoints, credentials by reference, push and watch settings.

Secrets never sit in the YAML nor on the command line: a password or token is named by the
environment variable (``password_env``, ``token_env``) or the file (``password_file``,
``token_file``, e.g. a Docker secret) that holds it, and is read only when a connection is made.
A literal ``password:`` or ``token:`` key is an error. Validation runs with the rest of the
config (``cac-mhub validate``), so a typo is found before any work: importing this module
registers :func:`check_section` with the chain's config loader (:func:`cac_mhub.config.register_section`).

.. code-block:: yaml

    pacs:
      use: dicomweb                 # or dimse: which endpoint pull/push/watch talk to
      dicomweb: {url: https://pacs/dicom-web, auth: basic, username: cac, password_env: CAC_PACS_PASSWORD}
      dimse: {host: pacs, port: 104, called_aet: PACS, calling_aet: CACMHUB, retrieve: c-get}
      push: {enabled: true, retries: 3, backoff_s: 2.0}
      watch: {interval_s: 300, lookback_days: 7}
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..chain import ChainError
from ..config import register_section

AUTH_KINDS = ("none", "basic", "bearer")
RETRIEVE_KINDS = ("c-get", "c-move")
SECRET_KEYS = ("password", "token", "secret", "api_key")

#: key -> (types, default). ``None`` as default: optional with no value.
_DICOMWEB: dict[str, tuple[tuple[type, ...], Any]] = {
    "url": ((str,), None),
    "auth": ((str,), "none"),
    "username": ((str,), None),
    "password_env": ((str,), None),
    "password_file": ((str,), None),
    "token_env": ((str,), None),
    "token_file": ((str,), None),
    "ca_bundle": ((str,), None),
    "verify": ((bool,), True),
    "timeout_s": ((int, float), 30.0),
}
_DIMSE: dict[str, tuple[tuple[type, ...], Any]] = {
    "host": ((str,), None),
    "port": ((int,), 104),
    "called_aet": ((str,), "ANY-SCP"),
    "calling_aet": ((str,), "CACMHUB"),
    "retrieve": ((str,), "c-get"),
    "scp_port": ((int,), 11113),
    "scp_bind": ((str,), "0.0.0.0"),
    "tls": ((bool,), False),
    "ca_bundle": ((str,), None),
    "timeout_s": ((int, float), 30.0),
}
_PUSH: dict[str, tuple[tuple[type, ...], Any]] = {
    "enabled": ((bool,), True),
    "retries": ((int,), 3),
    "backoff_s": ((int, float), 2.0),
    "confirm": ((bool,), True),
}
_WATCH: dict[str, tuple[tuple[type, ...], Any]] = {
    "interval_s": ((int, float), 300.0),
    "lookback_days": ((int,), 7),
    "max_backoff_s": ((int, float), 600.0),
    "max_attempts": ((int,), 3),
}
_TOP = {"use", "dicomweb", "dimse", "push", "watch", "modality"}


@dataclass(frozen=True)
class DicomWebEndpoint:
    url: str
    auth: str = "none"
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    token_env: str | None = None
    token_file: str | None = None
    ca_bundle: str | None = None
    verify: bool = True
    timeout_s: float = 30.0

    def password(self) -> str:
        return read_secret("pacs.dicomweb.password", self.password_env, self.password_file)

    def token(self) -> str:
        return read_secret("pacs.dicomweb.token", self.token_env, self.token_file)

    def verify_setting(self) -> bool | str:
        """What requests takes as ``verify``: the CA bundle path, True, or False (said in the log)."""
        if not self.verify:
            return False
        return self.ca_bundle or True


@dataclass(frozen=True)
class DimseEndpoint:
    host: str
    port: int = 104
    called_aet: str = "ANY-SCP"
    calling_aet: str = "CACMHUB"
    retrieve: str = "c-get"
    scp_port: int = 11113
    scp_bind: str = "0.0.0.0"
    """Address our storage SCP listens on for C-MOVE (the PACS must reach it at scp_port)."""
    tls: bool = False
    ca_bundle: str | None = None
    timeout_s: float = 30.0

    @property
    def where(self) -> str:
        return f"{self.called_aet}@{self.host}:{self.port}"


@dataclass(frozen=True)
class PushSettings:
    enabled: bool = True
    retries: int = 3
    backoff_s: float = 2.0
    confirm: bool = True


@dataclass(frozen=True)
class WatchSettings:
    interval_s: float = 300.0
    lookback_days: int = 7
    max_backoff_s: float = 600.0
    max_attempts: int = 3


@dataclass(frozen=True)
class PacsSettings:
    use: str
    dicomweb: DicomWebEndpoint | None
    dimse: DimseEndpoint | None
    push: PushSettings
    watch: WatchSettings
    modality: str = "CT"

    def endpoint_name(self, via: str | None = None) -> str:
        """The protocol to talk (``via`` from the command line wins), checked to be configured."""
        name = via or self.use
        if name == "dicomweb" and self.dicomweb is None:
            raise ChainError("pacs.dicomweb is not configured (url, auth, ...)")
        if name == "dimse" and self.dimse is None:
            raise ChainError("pacs.dimse is not configured (host, port, called_aet, ...)")
        return name


def check_section(raw: Any) -> dict[str, Any]:
    """Validate a raw ``pacs:`` mapping and return it with defaults filled in (secrets unread)."""
    if not isinstance(raw, dict):
        raise ChainError(f"pacs: must be a mapping (use, dicomweb, dimse, push, watch), got {type(raw).__name__}")
    unknown = set(raw) - _TOP
    if unknown:
        raise ChainError(f"pacs: unknown key(s) {', '.join(sorted(map(str, unknown)))}; known: {', '.join(sorted(_TOP))}")
    out: dict[str, Any] = {}
    for name, schema in (("dicomweb", _DICOMWEB), ("dimse", _DIMSE)):
        if raw.get(name) is not None:
            out[name] = _block(f"pacs.{name}", raw[name], schema)
    out["push"] = _block("pacs.push", raw.get("push") or {}, _PUSH)
    out["watch"] = _block("pacs.watch", raw.get("watch") or {}, _WATCH)
    use = raw.get("use", "dicomweb" if "dicomweb" in out or "dimse" not in out else "dimse")
    if use not in ("dicomweb", "dimse"):
        raise ChainError(f"pacs.use: {use!r} is not one of ['dicomweb', 'dimse']")
    out["use"] = use
    modality = raw.get("modality", "CT")
    if not isinstance(modality, str) or not modality:
        raise ChainError("pacs.modality: expected a modality such as CT")
    out["modality"] = modality
    web = out.get("dicomweb")
    if web is not None:
        if not web["url"] or not str(web["url"]).startswith(("http://", "https://")):
            raise ChainError("pacs.dicomweb.url: expected an http:// or https:// address")
        if web["auth"] not in AUTH_KINDS:
            raise ChainError(f"pacs.dicomweb.auth: {web['auth']!r} is not one of {list(AUTH_KINDS)}")
        if web["auth"] == "basic":
            if not web["username"]:
                raise ChainError("pacs.dicomweb.username: needed for auth basic")
            _one_source("pacs.dicomweb.password", web["password_env"], web["password_file"])
        if web["auth"] == "bearer":
            _one_source("pacs.dicomweb.token", web["token_env"], web["token_file"])
    dimse = out.get("dimse")
    if dimse is not None:
        if not dimse["host"]:
            raise ChainError("pacs.dimse.host: needed")
        if dimse["retrieve"] not in RETRIEVE_KINDS:
            raise ChainError(f"pacs.dimse.retrieve: {dimse['retrieve']!r} is not one of {list(RETRIEVE_KINDS)}")
        for key in ("port", "scp_port"):
            if not 1 <= dimse[key] <= 65535:
                raise ChainError(f"pacs.dimse.{key}: {dimse[key]} is not a TCP port")
        for key in ("called_aet", "calling_aet"):
            if not 1 <= len(dimse[key].strip()) <= 16:
                raise ChainError(f"pacs.dimse.{key}: an AE title has 1 to 16 characters")
    if out["push"]["retries"] < 0 or out["push"]["backoff_s"] < 0:
        raise ChainError("pacs.push: retries and backoff_s must not be negative")
    if out["watch"]["interval_s"] <= 0:
        raise ChainError("pacs.watch.interval_s: must be positive")
    return out


def _block(where: str, raw: Any, schema: dict[str, tuple[tuple[type, ...], Any]]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ChainError(f"{where}: must be a mapping, got {type(raw).__name__}")
    for key in raw:
        if str(key).lower() in SECRET_KEYS:
            raise ChainError(f"{where}.{key}: secrets are never written in the config; "
                             f"name an environment variable ({key}_env) or a file ({key}_file)")
    unknown = set(raw) - set(schema)
    if unknown:
        raise ChainError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                         f"known: {', '.join(sorted(schema))}")
    out = {}
    for key, (types, default) in schema.items():
        value = copy.deepcopy(raw.get(key, default))
        if value is not None:
            if float in types and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                names = "/".join(t.__name__ for t in types)
                raise ChainError(f"{where}.{key}: expected {names}, got {type(value).__name__}")
        out[key] = value
    return out


def _one_source(what: str, env: str | None, file: str | None) -> None:
    if bool(env) == bool(file):
        raise ChainError(f"{what}_env or {what}_file: give exactly one (where the secret is read from)")


def read_secret(what: str, env: str | None, file: str | None) -> str:
    """The secret from its environment variable or file; errors name the source, never the value."""
    if env:
        value = os.environ.get(env)
        if not value:
            raise ChainError(f"{what}_env: environment variable {env} is not set")
        return value
    if file:
        try:
            value = Path(file).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ChainError(f"{what}_file: {file} cannot be read ({error.strerror or type(error).__name__})") from None
        if not value:
            raise ChainError(f"{what}_file: {file} is empty")
        return value
    raise ChainError(f"{what}: no source configured")


def settings(section: dict[str, Any] | None) -> PacsSettings:
    """Typed settings from a validated section (see :func:`check_section`)."""
    if not section:
        raise ChainError("no pacs: section in the config; add one (docs/pacs.md) or give --pacs-config FILE")
    web, dimse = section.get("dicomweb"), section.get("dimse")
    return PacsSettings(
        use=section["use"],
        dicomweb=DicomWebEndpoint(**web) if web else None,
        dimse=DimseEndpoint(**dimse) if dimse else None,
        push=PushSettings(**section["push"]),
        watch=WatchSettings(**section["watch"]),
        modality=section["modality"],
    )


register_section("pacs", check_section)
