"""Evaluator definitions: one YAML file per evaluator, versioned by content hash.

Example ``evaluators/no-tool-errors.yaml``::

    version: 1
    name: no-tool-errors
    kind: code
    dimension: tool_use
    criterion:
      name: no-tool-errors
      version: 1
      text: Every tool call succeeds.
    code:
      callable: assay.evaluators.checks:no_tool_errors
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from assay.exceptions import ConfigError, NotFoundError

_POLICY_FIELDS = {"description", "threshold", "min_pass_rate", "sample_rate"}
_LABEL_RE = re.compile(r"^[a-z][a-z0-9_-]*$")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CriterionRef(_Model):
    """The rubric criterion an evaluator scores."""

    name: str = Field(min_length=1, description="criterion name, as in the annotations")
    version: int = Field(default=1, ge=1, description="criterion version the evaluator was written against")
    text: str = Field(min_length=1, description="the written statement of what good means")


class CodeSpec(_Model):
    """How a ``code`` evaluator finds its check."""

    callable: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
                          description='import path "package.module:function"; the function takes '
                                      "(steps: list[Step], unit: Unit) and returns a float in [0, 1] "
                                      "or (float, reason)")
    args: dict[str, Any] = Field(default_factory=dict,
                                 description="keyword arguments passed to the check, e.g. {tool: cancel_reservation}")


class JudgeSpec(_Model):
    """How an ``llm_judge`` evaluator asks its judge."""

    prompt: str | None = Field(default=None, description="Jinja2 template with {{ criterion }}, {{ timeline }}, "
                                                 "{{ labels }}; None: the shipped default_judge.j2")
    model: str | None = Field(default=None, description="judge model override; None: the workspace judge model")
    labels: dict[str, float] = Field(default_factory=lambda: {"pass": 1.0, "fail": 0.0},
                                     description="verdict label -> score in [0, 1]")
    scale: tuple[float, float] | None = Field(
        default=None, description="[low, high] of a numeric score the judge gives instead of a label, e.g. "
                                  "[1, 10]; normalised to [0, 1]; a score outside it is an error")

    @field_validator("scale")
    @classmethod
    def _check_scale(cls, scale: tuple[float, float] | None) -> tuple[float, float] | None:
        if scale is not None and not scale[0] < scale[1]:
            raise ValueError(f"scale {list(scale)} must be [low, high] with low < high")
        return scale

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, labels: dict[str, float]) -> dict[str, float]:
        if not labels:
            raise ValueError("at least one label is needed")
        for label, score in labels.items():
            if not _LABEL_RE.match(label):
                raise ValueError(f"label {label!r} must be lowercase letters, digits, '_' or '-'")
            if not 0.0 <= score <= 1.0:
                raise ValueError(f"label {label!r} has score {score}, outside [0, 1]")
        return labels

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, prompt: str | None) -> str | None:
        if prompt is not None:
            try:
                template_environment().parse(prompt)
            except jinja2.TemplateSyntaxError as exc:
                raise ValueError(f"prompt template line {exc.lineno}: {exc.message}") from exc
        return prompt


class EvaluatorDef(_Model):
    """One evaluator: scores any unit on ONE dimension, normalised to [0, 1].

    Stored as YAML (``evaluators/<name>.yaml``); ``version`` is the file-format version,
    the evaluator's own version is :func:`content_version`.
    """

    version: Literal[1] = Field(default=1, description="file-format version")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="unique evaluator name")
    kind: Literal["code", "llm_judge"]
    dimension: str = Field(min_length=1, description="what is scored, e.g. tool_use, policy, tone")
    description: str = Field(default="", description="free text for readers; not part of the content version")
    criterion: CriterionRef
    threshold: float = Field(default=0.80, ge=0, le=1, description="calibration agreement needed for activation")
    pass_score: float = Field(default=0.5, ge=0, le=1, description="a score >= this is a pass")
    min_pass_rate: float = Field(default=0.0, ge=0, le=1,
                                 description="CI gate: share of scored units that must pass, in [0, 1]")
    sample_rate: float = Field(default=0.10, ge=0, le=1,
                               description="online scoring: share of completed production units scored, in [0, 1]; "
                                           "deterministic by unit id (see assay.suite.online.sampled)")
    code: CodeSpec | None = Field(default=None, description="required when kind is code")
    judge: JudgeSpec | None = Field(default=None,
                                    description="for kind llm_judge; default: the default prompt and labels")

    @model_validator(mode="after")
    def _check_kind(self) -> EvaluatorDef:
        if self.kind == "code" and (self.code is None or self.judge is not None):
            raise ValueError("kind 'code' needs a 'code' section and no 'judge' section")
        if self.kind == "llm_judge" and self.code is not None:
            raise ValueError("kind 'llm_judge' takes a 'judge' section, not 'code'")
        return self

    def judge_spec(self) -> JudgeSpec:
        """The judge section with defaults filled (for ``llm_judge``)."""
        return self.judge or JudgeSpec()

    def prompt_template(self) -> str:
        """The judge prompt's template text: the file's own, or the shipped default."""
        return self.judge_spec().prompt or default_prompt()


def template_environment() -> jinja2.Environment:
    """Jinja2 environment for judge prompts: no autoescape, undefined names are errors."""
    return jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def default_prompt() -> str:
    """Text of the shipped default judge prompt (``evaluators/prompts/default_judge.j2``)."""
    return resources.files("assay.evaluators").joinpath("prompts/default_judge.j2").read_text(encoding="utf-8")


def content_version(defn: EvaluatorDef) -> str:
    """The evaluator's version: first 12 hex chars of the SHA-256 of its normalised definition.

    Normalised: defaults filled in, the default prompt resolved to its text (so a changed
    shipped prompt is a new version), label order kept (the prompt lists the labels in
    order), line endings unified, canonical JSON. Prose and policy fields are left out
    (``description``, ``threshold``, ``min_pass_rate``, ``sample_rate``): they change no score,
    so editing them keeps the calibration of this version valid.
    """
    data = defn.model_dump(mode="json", exclude=_POLICY_FIELDS)
    if defn.kind == "llm_judge":
        spec = defn.judge_spec()
        data["judge"] = {**spec.model_dump(mode="json"), "label_order": list(spec.labels),
                         "prompt": defn.prompt_template().replace("\r\n", "\n")}
        if spec.scale is None:  # fields added later hash only when set: existing versions stay valid
            del data["judge"]["scale"]
    if defn.code is not None and not defn.code.args:
        del data["code"]["args"]
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def evaluator_json_schema() -> dict[str, Any]:
    """JSON Schema of the evaluator file format (shipped as ``evaluators/evaluator.schema.json``)."""
    schema = EvaluatorDef.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "assay evaluator"
    return schema


def load_evaluator(path: Path | str) -> EvaluatorDef:
    """Read one evaluator YAML file.

    Raises:
        NotFoundError: the file does not exist.
        ConfigError: invalid YAML or invalid fields (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError("evaluator file", str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}".replace("\n", " "), str(path)) from exc
    if not isinstance(data, dict):
        raise ConfigError("an evaluator file must hold a mapping", str(path))
    try:
        return EvaluatorDef.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_validation_message(exc), str(path)) from exc


def save_evaluator(defn: EvaluatorDef, path: Path | str) -> Path:
    """Write an evaluator to a YAML file (multi-line text as literal blocks); returns the path.

    Fields left at their defaults are omitted, except ``version``, ``name`` and ``kind``.
    """
    path = Path(path)
    data = defn.model_dump(mode="json", exclude_defaults=True)
    ordered = {"version": defn.version, "name": defn.name, "kind": defn.kind, **data}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump(ordered, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100),
                    encoding="utf-8")
    return path


def load_evaluators(folder: Path | str) -> list[EvaluatorDef]:
    """Read every ``*.yaml`` / ``*.yml`` evaluator in a folder, sorted by name.

    Returns an empty list when the folder does not exist.

    Raises:
        ConfigError: an invalid file, or two files with the same evaluator name.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found: dict[str, tuple[Path, EvaluatorDef]] = {}
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        defn = load_evaluator(path)
        if defn.name in found:
            raise ConfigError(f"evaluator name {defn.name!r} is also defined in {found[defn.name][0]}", str(path))
        found[defn.name] = (path, defn)
    return [found[name][1] for name in sorted(found)]


def _validation_message(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}" for err in exc.errors()]
    return "; ".join(parts)


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)
