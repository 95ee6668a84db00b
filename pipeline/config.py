"""The pipeline's YAML configuration: typed, validated, with clear errors.

Keys (see ARCHITECTURE.md)::

    dicom:
      source: /data/cxr            # folder scanned recursively (required), a DICOMweb base URL
                                   # (http://cmcl:${PACS_PASSWORD}@pacs:8042/dicom-web) or
                                   # dimse://AET@host:port (C-FIND + C-GET)
      query: {ModalitiesInStudy: DX}   # study-level search filters of a PACS source
      token_env: PACS_TOKEN        # DICOMweb: a bearer token from this environment variable
      ca_bundle: null              # DICOMweb over https: a CA file (default: system CAs)
      calling_aet: CMCL            # DIMSE: our AE title (register it in the PACS)
      modalities: [CR, DX, MR]     # others are quarantined as unsupported_modality
      image_size: 64               # model input is image_size x image_size, one channel
      mri_reduction: middle        # middle | mip: how an MRI volume becomes a 2D image
      workers: 2                   # ingest processes
      cache_dir: null              # preprocessed-array cache; default <results dir>/.cmcl_cache
      reject_burned_in: true       # quarantine BurnedInAnnotation == YES
    clinical:
      url: postgresql://reader@db/clinic    # passwords only as ${ENV_VAR}
      query: SELECT mrn, covid, age FROM clinical_records
      id_column: mrn
      variables: {covid: binary}   # continuous | binary | categorical; inferred if omitted
    results:
      url: sqlite:///cmcl.db
      report_dir: reports          # one folder per run
    model: {}                      # CMCL hyperparameters (cmcl_core.config.CMCLConfig fields)
    knowledge:                     # optional: what the user knows of time order
      causes: [covid, age]         # precede imaging: no incoming edge
      effects: [icu_admission]     # follow imaging: no outgoing edge
    stability: {resamples: 20, level: dag}   # dag | full; null turns resampling off
    compute: {engine: local, address: null, workers: 2}   # local | dask (prefect-dask)
                                   # threads / workers: null (default) sizes them from the
                                   # CPU affinity and cgroup quota (pipeline/cpus.py)
    seed: 0

Secrets never live in the file: a database URL may reference environment variables as
``${NAME}`` (expanded at load time), and a URL with a literal password is refused.
Unknown keys are rejected so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cmcl_core.variables import VariableType
from db.urls import ENV_REF, literal_password
from pipeline.errors import ConfigError


class MriReduction(StrEnum):
    """How a 3D MRI series is reduced to the 2D image the model takes."""

    MIDDLE = "middle"  # the middle slice along the acquisition (slice) axis
    MIP = "mip"  # maximum-intensity projection along the acquisition axis


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_url(url: str, key: str) -> str:
    """Refuse a literal password; the ${VAR} form is expanded later by ``expand_env``."""
    if literal_password(url) is not None:
        raise ValueError(
            f"{key} contains a literal password; put it in an environment variable and "
            f"write it as ${{NAME}} in the URL (secrets never live in the config file)"
        )
    return url


_AET = re.compile(r"^[ -\[\]-~]{1,16}$")  # printable ASCII without backslash, 1-16 characters


def is_remote(source: Path | str) -> bool:
    """Whether ``dicom.source`` names a PACS (a DICOMweb URL or ``dimse://``), not a folder."""
    return isinstance(source, str) and source.lower().startswith(
        ("http://", "https://", "dimse://")
    )


class DicomConfig(_Strict):
    source: Path | str
    query: dict[str, str] = Field(default_factory=dict)
    token_env: str | None = None
    ca_bundle: Path | None = None
    calling_aet: str = "CMCL"
    modalities: tuple[str, ...] = ("CR", "DX", "MR")
    image_size: int = Field(64, ge=8, le=1024)
    mri_reduction: MriReduction = MriReduction.MIDDLE
    workers: int = Field(2, ge=1, le=256)
    cache_dir: Path | None = None
    reject_burned_in: bool = True

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, v: Any) -> Any:
        if isinstance(v, str) and re.match(r"^[A-Za-z][\w+.-]*://", v):
            if not is_remote(v):
                raise ValueError(
                    "dicom.source must be a folder, an http(s):// DICOMweb base URL or "
                    "dimse://AET@host:port"
                )
            return _check_url(v, "dicom.source")
        return Path(v) if isinstance(v, str) else v

    @field_validator("query", mode="before")
    @classmethod
    def _query(cls, v: Any) -> Any:
        if isinstance(v, dict):  # YAML reads 20240101 as a number; a filter is text
            return {str(k): str(x) for k, x in v.items()}
        return v

    @field_validator("calling_aet")
    @classmethod
    def _aet(cls, v: str) -> str:
        if not _AET.match(v) or not v.strip():
            raise ValueError("an AE title is 1-16 printable ASCII characters without backslash")
        return v.strip()

    @model_validator(mode="after")
    def _remote_keys(self) -> DicomConfig:
        if not is_remote(self.source):
            used = [k for k in ("query", "token_env", "ca_bundle") if getattr(self, k)]
            if used:
                raise ValueError(
                    f"dicom.{used[0]} is read only when dicom.source is a PACS (http(s):// or "
                    "dimse://); remove it or set dicom.source to the PACS"
                )
        elif str(self.source).lower().startswith("dimse://") and (self.token_env or self.ca_bundle):
            raise ValueError(
                "dicom.token_env and dicom.ca_bundle are for a DICOMweb source; a dimse:// "
                "source authenticates by AE title (dicom.calling_aet)"
            )
        return self

    @field_validator("modalities")
    @classmethod
    def _upper(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one modality is required (e.g. [CR, DX, MR])")
        return tuple(s.strip().upper() for s in v)


class ClinicalConfig(_Strict):
    url: str
    query: str
    id_column: str
    variables: dict[str, VariableType] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v, "clinical.url")


class ResultsConfig(_Strict):
    url: str = "sqlite:///cmcl.db"
    report_dir: Path = Path("reports")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v, "results.url")


class KnowledgeConfig(_Strict):
    """Roles of clinical variables: a cause precedes imaging, an effect follows it."""

    causes: tuple[str, ...] = ()
    effects: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _disjoint(self) -> KnowledgeConfig:
        both = sorted(set(self.causes) & set(self.effects))
        if both:
            raise ValueError(
                f"{', '.join(both)} is listed both as a cause and as an effect; keep it in one "
                "list (a cause precedes imaging, an effect follows it)"
            )
        return self

    def roles(self) -> dict[str, str]:
        """``{name: "cause" | "effect"}`` for the estimator's ``u_roles``."""
        return {n: "cause" for n in self.causes} | {n: "effect" for n in self.effects}


class StabilityConfig(_Strict):
    """Edge stability from resampled fits (``cmcl_core.stability``)."""

    resamples: int = Field(20, ge=1, le=10_000)
    level: Literal["dag", "full"] = "dag"


class ComputeConfig(_Strict):
    """Where fan-out work runs: local worker processes, or a Dask cluster (prefect-dask), and
    how many CPU threads the run's torch uses. ``threads`` and ``workers`` left null follow
    the CPUs the run is given (affinity and cgroup quota, :mod:`pipeline.cpus`)."""

    engine: Literal["local", "dask"] = "local"
    address: str | None = None  # a Dask scheduler, e.g. tcp://scheduler:8786; None: a LocalCluster
    workers: int | None = Field(None, ge=1, le=1024)  # local threads / LocalCluster workers
    threads: int | None = Field(None, ge=1, le=1024)  # torch intra-op threads of the run

    @model_validator(mode="after")
    def _address_needs_dask(self) -> ComputeConfig:
        if self.address is not None and self.engine != "dask":
            raise ValueError("compute.address is read by the dask engine only; set engine: dask")
        return self


class Config(_Strict):
    dicom: DicomConfig
    clinical: ClinicalConfig
    results: ResultsConfig = ResultsConfig()
    model: dict[str, Any] = Field(default_factory=dict)
    knowledge: KnowledgeConfig = KnowledgeConfig()
    stability: StabilityConfig | None = StabilityConfig()
    compute: ComputeConfig = ComputeConfig()
    seed: int = 0

    def redacted(self) -> dict[str, Any]:
        """The config as JSON-able data, safe to store with a run (no secrets expanded)."""
        return self.model_dump(mode="json")


def expand_env(url: str) -> str:
    """Expand ``${NAME}`` references from the environment (for opening connections only).

    Raises:
        ConfigError: a referenced variable is not set.
    """

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise ConfigError(
                f"a URL in the config refers to ${{{name}}}, but that variable is not set",
                f"export {name}=... before running",
            )
        return os.environ[name]

    return ENV_REF.sub(repl, url)


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  - {loc}: unknown key (check its spelling; see the README's config)")
        elif e["type"] == "missing":
            lines.append(f"  - {loc}: required key is missing")
        else:
            lines.append(f"  - {loc}: {e['msg']}")
    return "\n".join(lines)


def config_from_dict(data: Any, source: str = "<dict>", base_dir: Path | None = None) -> Config:
    """Validate a parsed config mapping; relative paths resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a YAML mapping (dicom:, clinical:, ...)")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None
    if base_dir is not None:
        cfg = _resolve_paths(cfg, base_dir)
    return cfg


def _resolve_paths(cfg: Config, base: Path) -> Config:
    def res(p: Path | str | None) -> Path | str | None:
        if p is None or isinstance(p, str):  # a PACS URL stays as written
            return p
        return p if p.is_absolute() else (base / p).resolve()

    dicom = cfg.dicom.model_copy(
        update={
            "source": res(cfg.dicom.source),
            "cache_dir": res(cfg.dicom.cache_dir),
            "ca_bundle": res(cfg.dicom.ca_bundle),
        }
    )
    results = cfg.results.model_copy(
        update={
            "report_dir": res(cfg.results.report_dir),
            "url": _resolve_sqlite(cfg.results.url, base),
        }
    )
    clinical = cfg.clinical.model_copy(update={"url": _resolve_sqlite(cfg.clinical.url, base)})
    return cfg.model_copy(update={"dicom": dicom, "results": results, "clinical": clinical})


def _resolve_sqlite(url: str, base: Path) -> str:
    """Make a relative SQLite file URL (``sqlite:///x.db``) absolute against ``base``."""
    m = re.match(r"^(sqlite(?:\+\w+)?:///)(?!/)(.+)$", url)
    if not m or m.group(2).startswith((":memory:", "file:")):
        return url
    path, sep, query = m.group(2).partition("?")
    return m.group(1) + str((base / path).resolve()) + sep + query


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file.

    Relative paths (``dicom.source``, ``results.report_dir``, a relative SQLite file) are
    resolved against the config file's folder, so a config works from any working directory.

    Raises:
        ConfigError: the file is missing, is not YAML, or fails validation.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}", "pass --config with a YAML file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{p} is not valid YAML: {err}") from None
    return config_from_dict(data, source=str(p), base_dir=p.parent.resolve())


def cache_dir_for(cfg: Config) -> Path:
    """The preprocessed-array cache: ``dicom.cache_dir``, else ``.cmcl_cache`` beside a SQLite
    results file, else ``./.cmcl_cache``."""
    if cfg.dicom.cache_dir is not None:
        return Path(cfg.dicom.cache_dir)
    url = cfg.results.url
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(url[len("sqlite:///") :]).parent / ".cmcl_cache"
    return Path.cwd() / ".cmcl_cache"


def run_folder(cfg: Config, run_id: int) -> Path:
    """The folder of a run's report, model and ONNX files: ``results.report_dir/run-<id>``."""
    return Path(cfg.results.report_dir) / f"run-{run_id}"
