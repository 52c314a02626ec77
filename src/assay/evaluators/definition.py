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

import contextlib
import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

import jinja2
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from assay.annotations.scale import BinaryScale, Scale
from assay.exceptions import ConfigError, NotFoundError, UsageError

_POLICY_FIELDS = {"description", "threshold", "min_pass_rate", "sample_rate"}
_SECTIONS = ("code", "judge")
_LABEL_RE = re.compile(r"^[a-z][a-z0-9_-]*$")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CriterionRef(_Model):
    """The rubric criterion an evaluator scores, with its scale (binary unless said otherwise)."""

    name: str = Field(min_length=1, description="criterion name, as in the annotations")
    version: int = Field(default=1, ge=1, description="criterion version the evaluator was written against")
    text: str = Field(min_length=1, description="the written statement of what good means")
    scale: Scale = Field(default_factory=BinaryScale,
                         description="the criterion's scale: binary (default), ordinal (levels with anchors), "
                                     "categorical (classes), pairwise (first/second/tie); the evaluator returns a "
                                     "value on it")


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
                                                 "{{ system_prompt }} (the unit's instructions, within "
                                                 "[judge] max_system_chars), {{ labels }}; None: the shipped "
                                                 "default_judge.j2")
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

    The fields every kind shares; each kind is a subclass with ``kind: Literal[...]`` and its
    own sections, and together they form a discriminated union on ``kind`` (see
    :mod:`assay.evaluators.kinds`): ``code`` (:class:`CodeEvaluatorDef`), ``llm_judge``
    (:class:`LlmJudgeEvaluatorDef`), ``hybrid`` (:class:`HybridEvaluatorDef`), and kinds
    registered by extensions. ``EvaluatorDef(kind=..., ...)`` and
    ``EvaluatorDef.model_validate(data)`` return an instance of the kind's class.

    Stored as YAML (``evaluators/<name>.yaml``); ``version`` is the file-format version,
    the evaluator's own version is :func:`content_version`.
    """

    uses_judge: ClassVar[bool] = False
    """True for kinds that ask a judge model (they need a judge client to run)."""

    version: Literal[1] = Field(default=1, description="file-format version")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="unique evaluator name")
    kind: str = Field(description="code, llm_judge, hybrid, external, or a kind an extension registers")
    dimension: str = Field(min_length=1, description="what is scored, e.g. tool_use, policy, tone")
    description: str = Field(default="", description="free text for readers; not part of the content version")
    criterion: CriterionRef
    threshold: float = Field(default=0.80, ge=0, le=1, description="activation: the lower 95% bound of each required "
                             "rate on the test split (binary: TPR and TNR) must reach it; with [calibration] policy "
                             "= \"point\", test agreement must")
    pass_score: float = Field(default=0.5, ge=0, le=1, description="a score >= this is a pass")
    min_pass_rate: float = Field(default=0.0, ge=0, le=1,
                                 description="CI gate: share of scored units that must pass, in [0, 1]")
    sample_rate: float = Field(default=0.10, ge=0, le=1,
                               description="online scoring: share of completed production units scored, in [0, 1]; "
                                           "deterministic by unit id (see assay.suite.online.sampled)")

    def __new__(cls, *args: Any, **data: Any) -> Any:
        """``EvaluatorDef(kind=K, ...)`` builds the class of kind ``K`` (an unknown kind fails validation)."""
        if cls is EvaluatorDef and isinstance(data.get("kind"), str):
            from assay.evaluators.kinds import definition_class

            with contextlib.suppress(ConfigError):
                cls = definition_class(data["kind"])
        return super().__new__(cls)

    def __init__(self, /, **data: Any) -> None:
        """Validate ``data`` (keyword arguments) into the kind's class (see ``__new__``).

        Raises:
            pydantic.ValidationError: invalid fields, or an unknown kind.
        """
        super().__init__(**data)

    @model_validator(mode="wrap")
    @classmethod
    def _one_of_the_kinds(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if cls is not EvaluatorDef or isinstance(data, EvaluatorDef):
            return handler(data)
        from assay.evaluators.kinds import definitions_adapter

        return definitions_adapter().validate_python(data)

    @model_validator(mode="before")
    @classmethod
    def _drop_null_sections(cls, data: Any) -> Any:
        """Stored definitions of older versions carry the other kind's section as null (``judge: null``)."""
        if isinstance(data, dict) and any(data.get(k, 0) is None and k not in cls.model_fields for k in _SECTIONS):
            return {k: v for k, v in data.items() if not (k in _SECTIONS and v is None and k not in cls.model_fields)}
        return data

    @model_validator(mode="after")
    def _labels_follow_the_scale(self) -> EvaluatorDef:
        judge = getattr(self, "judge", None)
        custom = isinstance(judge, JudgeSpec) and (judge.scale is not None or judge.labels != JudgeSpec().labels)
        if self.criterion.scale.kind != "binary" and custom:
            raise ValueError(f"judge.labels and judge.scale come from the criterion's {self.criterion.scale.kind} "
                             "scale: leave them out")
        return self

    @property
    def scale(self) -> Scale:
        """The scale of the evaluator's criterion (what its results' ``value`` is on)."""
        return self.criterion.scale

    def judge_spec(self) -> JudgeSpec:
        """The judge section with defaults filled.

        Raises:
            UsageError: this kind asks no judge (``uses_judge`` is False).
        """
        raise UsageError(f"{self.name} is a {self.kind} evaluator: it asks no judge")

    def verdict_labels(self) -> dict[str, float]:
        """The labels a judge reply may give -> their score in [0, 1]: the judge section's on a binary
        criterion, else the scale's values (lowercased text: levels, class names, first/second/tie)."""
        if self.scale.kind == "binary":
            return dict(self.judge_spec().labels)
        return {str(v).lower(): self.scale.score(v) for v in self.scale.choices()}

    def prompt_template(self) -> str:
        """The judge prompt's template text: the file's own, or the shipped default of the criterion's
        scale (judge kinds only)."""
        return self.judge_spec().prompt or default_prompt(self.scale.kind)

    def code_spec(self) -> CodeSpec | None:
        """The code check's section, None for kinds without one."""
        return None

    def content_fields(self) -> dict[str, Any]:
        """The normalised definition :func:`content_version` hashes (JSON-ready): policy fields left out;
        a binary scale too (evaluators written before scales keep their versions)."""
        data = self.model_dump(mode="json", exclude=_POLICY_FIELDS)
        if self.scale.kind == "binary":
            del data["criterion"]["scale"]
        return data


class CodeEvaluatorDef(EvaluatorDef):
    """``kind: code``: a Python check over the step timeline decides every unit."""

    kind: Literal["code"]
    code: CodeSpec = Field(description="the check")

    def code_spec(self) -> CodeSpec:
        return self.code

    def content_fields(self) -> dict[str, Any]:
        # "judge": null as the versions were hashed before the kinds were classes
        return {**super().content_fields(), "code": _code_content(self.code), "judge": None}


class LlmJudgeEvaluatorDef(EvaluatorDef):
    """``kind: llm_judge``: a judge model reads the prompt and gives the verdict of every unit."""

    uses_judge: ClassVar[bool] = True
    kind: Literal["llm_judge"]
    judge: JudgeSpec | None = Field(default=None, description="default: the default prompt and labels")

    def judge_spec(self) -> JudgeSpec:
        return self.judge or JudgeSpec()

    def content_fields(self) -> dict[str, Any]:
        # "code": null as the versions were hashed before the kinds were classes
        return {**super().content_fields(), "judge": _judge_content(self), "code": None}


class HybridEvaluatorDef(EvaluatorDef):
    """``kind: hybrid``: a code check decides what it can and hands the rest to a judge; one verdict, one version.

    The check takes ``(steps, unit, **args)`` like a ``code`` check and returns a decision: a score
    (or ``(score, reason)``), :class:`~assay.evaluators.NotApplicable`, or ``None`` /
    :class:`~assay.evaluators.Defer` to hand the unit to the judge. Results record which part
    decided (``decided_by``).
    """

    uses_judge: ClassVar[bool] = True
    kind: Literal["hybrid"]
    code: CodeSpec = Field(description="the code part: decides a unit, or defers it to the judge")
    judge: JudgeSpec | None = Field(default=None, description="the judge part, for the units the code part "
                                                              "defers; default: the default prompt and labels")

    def judge_spec(self) -> JudgeSpec:
        return self.judge or JudgeSpec()

    def code_spec(self) -> CodeSpec:
        return self.code

    def content_fields(self) -> dict[str, Any]:
        return {**super().content_fields(), "code": _code_content(self.code), "judge": _judge_content(self)}


def _code_content(code: CodeSpec) -> dict[str, Any]:
    data = code.model_dump(mode="json")
    if not code.args:  # args were added later: existing versions stay valid
        del data["args"]
    return data


def _judge_content(defn: EvaluatorDef) -> dict[str, Any]:
    """The judge section as hashed: defaults filled, the prompt's text resolved, label order kept."""
    spec = defn.judge_spec()
    data = {**spec.model_dump(mode="json"), "label_order": list(spec.labels),
            "prompt": defn.prompt_template().replace("\r\n", "\n")}
    if spec.scale is None:  # fields added later hash only when set: existing versions stay valid
        del data["scale"]
    return data


def template_environment() -> jinja2.Environment:
    """Jinja2 environment for judge prompts: no autoescape, undefined names are errors."""
    return jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


DEFAULT_PROMPTS = {"binary": "default_judge.j2", "ordinal": "ordinal_judge.j2", "categorical": "categorical_judge.j2",
                   "pairwise": "pairwise_judge.j2"}
"""The shipped default judge prompt of each scale (``evaluators/prompts/``)."""


def default_prompt(scale: str = "binary") -> str:
    """Text of the shipped default judge prompt of a scale (``evaluators/prompts/``; binary:
    ``default_judge.j2``)."""
    name = DEFAULT_PROMPTS[scale]
    return resources.files("assay.evaluators").joinpath(f"prompts/{name}").read_text(encoding="utf-8")


def content_version(defn: EvaluatorDef) -> str:
    """The evaluator's version: first 12 hex chars of the SHA-256 of its normalised definition.

    Normalised: defaults filled in, the default prompt resolved to its text (so a changed
    shipped prompt is a new version), label order kept (the prompt lists the labels in
    order), line endings unified, canonical JSON. Prose and policy fields are left out
    (``description``, ``threshold``, ``min_pass_rate``, ``sample_rate``): they change no score,
    so editing them keeps the calibration of this version valid.
    """
    data = defn.content_fields()
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def evaluator_json_schema() -> dict[str, Any]:
    """JSON Schema of the evaluator file format (shipped as ``evaluators/evaluator.schema.json``).

    The discriminated union of the registered kinds (``oneOf`` with a ``discriminator`` on
    ``kind``), which validates each kind exactly; beside it, at the top, ``properties`` merges
    every kind's fields and ``required`` lists those all kinds need, for editors that complete
    from top-level properties only.
    """
    from assay.evaluators.kinds import definitions_adapter

    union = definitions_adapter().json_schema()
    names = [ref["$ref"].rsplit("/", 1)[-1] for ref in union["oneOf"]]
    kinds = [union["$defs"][name] for name in names]
    properties: dict[str, Any] = {}
    for kind in kinds:
        for name, prop in kind["properties"].items():
            properties.setdefault(name, prop)
    properties["kind"] = {"enum": [k["properties"]["kind"]["const"] for k in kinds], "title": "Kind",
                          "type": "string", "description": EvaluatorDef.model_fields["kind"].description}
    required = [n for n in kinds[0]["required"] if all(n in k["required"] for k in kinds)]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "assay evaluator",
            "description": "One evaluator: scores any unit on ONE dimension, normalised to [0, 1]; one of the kinds.",
            "type": "object", "properties": properties, "required": required, **union}


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
        raise ConfigError(_validation_message(exc, data.get("kind")), str(path)) from exc


def save_evaluator(defn: EvaluatorDef, path: Path | str) -> Path:
    """Write an evaluator to a YAML file (multi-line text as literal blocks); returns the path.

    Fields left at their defaults are omitted, except ``version``, ``name``, ``kind`` and a non-binary
    scale (whole, its ``kind`` included).
    """
    path = Path(path)
    data = defn.model_dump(mode="json", exclude_defaults=True)
    if defn.scale.kind != "binary":  # the scale's kind is its tag: never left out as a default
        data["criterion"]["scale"] = defn.scale.model_dump(mode="json")
    ordered = {"version": defn.version, "name": defn.name, "kind": defn.kind, **data}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump(ordered, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100),
                    encoding="utf-8")
    return path


def readable_yaml(defn: EvaluatorDef) -> str:
    """YAML of a definition with every field and the judge prompt spelled out (its template file read), for
    reading and diffing two versions (``assay evaluators diff``, the app's evaluator page)."""
    data = defn.model_dump(mode="json")
    if defn.uses_judge:
        data["judge"] = {**defn.judge_spec().model_dump(mode="json"), "prompt": defn.prompt_template()}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


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


def _validation_message(exc: ValidationError, kind: object) -> str:
    """``field.path: message; ...``, without the union's leading kind tag in each path."""
    parts = []
    for err in exc.errors():
        loc = err["loc"][1:] if err["loc"][:1] == (kind,) else err["loc"]
        msg = err["msg"]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc, msg = ("kind",), f"must be one of: {_kind_names()}" + (f", not {kind!r}" if kind is not None else "")
        parts.append(f"{'.'.join(str(p) for p in loc) or '(file)'}: {msg}")
    return "; ".join(parts)


def _kind_names() -> str:
    from assay.evaluators.kinds import EVALUATOR_KINDS

    return ", ".join(EVALUATOR_KINDS.names())


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)
