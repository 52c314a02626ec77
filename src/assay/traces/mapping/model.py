"""The mapping file format (version 1): where a log keeps its units, events, messages, tool calls,
outcome, feedback, times and usage. Paths are written in :mod:`assay.traces.mapping.paths`.

Validated when loaded: every path parses, every regular expression compiles, and an error names the
field (``messages.1.role.path: bad path ...``). The JSON Schema is shipped as ``mapping.schema.json``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from assay.traces.mapping.paths import parse_path
from assay.traces.model import Role

ROLE_NAMES: dict[str, Role] = {"system": "system", "developer": "system", "user": "user", "human": "user",
                               "assistant": "assistant", "ai": "assistant", "model": "assistant", "tool": "tool",
                               "function": "tool", "observation": "tool", "environment": "tool"}
"""Role values understood without a ``map`` (case-insensitive)."""


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_path(value: str | None) -> str | None:
    if value is not None:
        parse_path(value)
    return value


class RoleFrom(_Part):
    """A role read from the event: the value at ``path``, translated by ``map``, else a standard role name."""

    path: str = Field(description="where the role is, e.g. 'role' or 'from'")
    map: dict[str, Role] = Field(default_factory=dict, description="source value -> role (system, user, "
                                 "assistant, tool); values not listed use the standard names (user, human, "
                                 "assistant, ai, system, tool ...), then 'default'")
    default: Role | None = Field(default=None, description="the role of any other value; without it an unknown "
                                 "value rejects the record")

    path_parses = field_validator("path")(_check_path)


class MessageRule(_Part):
    """One message an event may hold. A rule whose ``content``, ``tool_calls`` and ``action`` are all
    missing in an event adds nothing for that event."""

    role: Role | RoleFrom = Field(description="a fixed role (system, user, assistant, tool) or {path, map, default}")
    content: str | None = Field(default=None, description="path to the text (a non-string value is kept as JSON)")
    name: str | None = Field(default=None, description="path to the speaker's name (the agent of a multi-agent "
                             "log, the tool of a result)")
    tool_calls: str | None = Field(default=None, description="path to structured tool calls: a list of OpenAI "
                                   "{id, function: {name, arguments}} or {id, name, arguments}")
    tool_call_id: str | None = Field(default=None, description="path to the id of the call a tool result answers")
    action: str | None = Field(default=None, description="path to a text action, turned into tool calls by "
                               "'actions' (without it the actions apply to an assistant's content)")
    is_error: str | None = Field(default=None, description="path to a boolean: this tool result is an error")

    paths_parse = field_validator("content", "name", "tool_calls", "tool_call_id", "action", "is_error")(_check_path)


class ActionRule(_Part):
    """A regular expression that turns text actions into tool calls (Python ``re``, multi-line mode:
    ``^``/``$`` match at each line; ``\\A`` anchors at the start of the text)."""

    pattern: str = Field(description="the regular expression; its named groups become the call's arguments")
    tool: str = Field(description="the tool name; {group} inserts a named group, e.g. 'http_{method}'")
    as_json: list[str] = Field(default_factory=list, description="named groups whose text is parsed as JSON "
                               "(kept as text when it is not JSON)")
    result: Literal["next", "rest", "none"] = Field(default="next", description="where the call's result is: "
                                                    "'next' the next tool message, 'rest' the text after the "
                                                    "match in the same message, 'none' no result (the call "
                                                    "stays on the assistant turn, e.g. FINISH(...))")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value, re.MULTILINE)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _groups_exist(self) -> ActionRule:
        groups = set(re.compile(self.pattern, re.MULTILINE).groupindex)
        wanted = set(re.findall(r"\{(\w+)\}", self.tool)) | set(self.as_json)
        missing = sorted(wanted - groups)
        if missing:
            raise ValueError(f"names groups the pattern does not have: {', '.join(missing)}")
        return self


class OutcomeRule(_Part):
    """The source's verdict on a unit: ``pass`` when the value is in ``pass`` (or at least ``pass_at``),
    ``fail`` when it is in ``fail`` (or, with only ``pass`` or ``pass_at`` given, anything else);
    ``unknown`` when the value is missing. A number is also kept as the unit's reward."""

    path: str = Field(description="where the outcome is, e.g. 'reward' or 'info.success'")
    pass_values: list[Any] = Field(default_factory=list, alias="pass", description="values that mean pass")
    fail_values: list[Any] = Field(default_factory=list, alias="fail", description="values that mean fail")
    pass_at: float | None = Field(default=None, description="a number at least this is a pass, below it a fail")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    path_parses = field_validator("path")(_check_path)

    @model_validator(mode="after")
    def _one_rule(self) -> OutcomeRule:
        if not (self.pass_values or self.fail_values or self.pass_at is not None):
            raise ValueError("give pass, fail or pass_at")
        return self


class FeedbackRule(_Part):
    """User feedback on a unit, kept as unit attributes ``user.feedback.score`` (0..1, or a boolean thumbs
    up) and ``user.feedback.comment``, which the rare-severe rules read (``[severe] feedback_below``)."""

    score: str | None = Field(default=None, description="path to a score in 0..1 or a boolean")
    comment: str | None = Field(default=None, description="path to the user's comment")
    map: dict[str, float] = Field(default_factory=dict, description="text value -> score, e.g. {down: 0, up: 1}")

    paths_parse = field_validator("score", "comment")(_check_path)


class UsageRule(_Part):
    """Token usage of an event's model call, put on the event's first assistant turn (unknown stays unknown)."""

    input_tokens: str | None = Field(default=None, description="path to the input (prompt) tokens")
    output_tokens: str | None = Field(default=None, description="path to the output (completion) tokens")
    cost: str | None = Field(default=None, description="path to the call's cost in USD")
    model: str | None = Field(default=None, description="path to the model name")

    paths_parse = field_validator("input_tokens", "output_tokens", "cost", "model")(_check_path)


class TraceMapping(_Part):
    """A declarative trace format (version 1): each JSON document of a file (the file, or each line of
    JSON Lines) holds unit records at ``records``; each record's events at ``events``; each event's
    messages by ``messages``; text actions become tool calls by ``actions``."""

    version: Literal[1] = Field(default=1, description="version of the mapping format")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="the format's name: unit ids are "
                      "NAME/ID, the source NAME:FILE")
    description: str | None = Field(default=None, description="what the format is, for people")
    records: str = Field(default="$", description="path to the unit records in a document ('$': the document "
                         "is one record; '[*]': a list of them; 'data.runs[*]' ...)")
    id: str | None = Field(default=None, description="path to the unit id in a record (default: the file name "
                           "when the file holds one record, else a content hash)")
    session: str | None = Field(default=None, description="path to a session id: records sharing it are one "
                                "session unit (each record a trace of it)")
    time: str | None = Field(default=None, description="path to the record's start time (ISO 8601 or epoch "
                             "s/ms/us/ns; no offset = UTC)")
    outcome: OutcomeRule | None = Field(default=None, description="the source's pass/fail verdict")
    feedback: FeedbackRule | None = Field(default=None, description="user feedback on the unit")
    environment: str | None = Field(default=None, description="path to the environment the record ran in "
                                    "(production, staging, evaluation ...)")
    release: str | None = Field(default=None, description="path to the release (app version) that produced it")
    attributes: dict[str, str] = Field(default_factory=dict, description="unit attribute name -> path, e.g. "
                                       "{task_id: task.id} (the gate pairs runs of one task by task_id)")
    events: str = Field(default="messages[*]", description="path to the record's events, in order")
    event_time: str | None = Field(default=None, description="path to an event's time")
    event_duration: str | None = Field(default=None, description="path to an event's duration in seconds "
                                       "(events without times are laid out back to back)")
    messages: list[MessageRule] = Field(min_length=1, description="the messages each event may hold, in order")
    usage: UsageRule | None = Field(default=None, description="token usage of an event's model call")
    actions: list[ActionRule] = Field(default_factory=list, description="regular expressions turning text "
                                      "actions into tool calls, tried in order")

    paths_parse = field_validator("records", "id", "session", "time", "environment", "release", "events",
                                  "event_time", "event_duration")(_check_path)

    @field_validator("attributes")
    @classmethod
    def _attribute_paths(cls, value: dict[str, str]) -> dict[str, str]:
        for path in value.values():
            parse_path(path)
        return value


def mapping_json_schema() -> dict[str, Any]:
    """JSON Schema of mapping files (shipped as ``traces/mapping/mapping.schema.json``)."""
    schema = TraceMapping.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": "assay trace mapping"}
