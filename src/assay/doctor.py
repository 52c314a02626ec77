"""``assay doctor``: is this machine and workspace ready? Each check takes a few seconds.

Checks (each a :class:`Check` with a status, what was measured and the fix):

- **store**: the workspace's store is reachable, its schema at the newest migration, SQLite in WAL
  mode (PostgreSQL: the server version). A store not created yet is fine (``skip``).
- **embedding model**: all-MiniLM-L6-v2 loads offline and embeds one text, in a child process.
- **local judge**: SmolLM2 answers a prompt of at least 600 tokens in its child process
  (tokens/s); the prompt is long on purpose: a llama.cpp built for the wrong CPU survives a short
  prompt and traps (``SIGILL``) on a long one.
- **API judge**: a minimal call to the configured OpenAI-compatible or Anthropic judge (latency);
  skipped without an API key.
- **chromium** (``dev=True``): Debian's Chromium renders a page headless, for the browser tests.

A check that does not apply is ``skip``; the exit code counts only ``fail``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from assay.exceptions import AssayError
from assay.models.runtime import judge_endpoint, judge_target
from assay.settings import Settings

Status = Literal["ok", "warn", "fail", "skip"]

LONG_PROMPT_TOKENS = 600


class Check(BaseModel):
    """One check's outcome.

    Attributes:
        name: what was checked, e.g. ``"local judge"``.
        status: ``ok``, ``warn`` (works, with a caveat), ``fail`` or ``skip`` (does not apply).
        measured: what was seen (numbers with units).
        fix: what to do when it is not ``ok`` (empty when nothing to do).
        seconds: wall time of the check.
        required: a ``fail`` here makes the doctor fail (exit 1).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    status: Status
    measured: str
    fix: str = ""
    seconds: float = 0.0
    required: bool = True


def _timed(name: str, fn: Callable[[], Check]) -> Check:
    start = time.perf_counter()
    try:
        check = fn()
    except AssayError as exc:
        check = Check(name=name, status="fail", measured=str(exc), fix=_fix_for(exc))
    return check.model_copy(update={"seconds": round(time.perf_counter() - start, 2)})


def _fix_for(exc: AssayError) -> str:
    hint = getattr(exc, "hint", None)
    return f"install it: {hint}" if hint else "see the message"


def check_store(settings: Settings) -> Check:
    """Reachable, migrations at head, WAL on SQLite (never creates a store)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    from assay._store.migrate import current_revision, head_revision

    url = settings.resolved_store_url()
    shown = url.split("@")[-1] if "@" in url else url
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        from pathlib import Path

        if not Path(url.removeprefix("sqlite:///")).exists():
            return Check(name="store", status="skip", measured=f"{shown}: not created yet (the first "
                         "`assay ingest` creates it)", required=False)
    engine = create_engine(url, connect_args={"connect_timeout": 5} if url.startswith("postgresql") else {})
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
                extra = f"journal_mode={mode}"
            else:
                extra = str(conn.execute(text("SELECT version()")).scalar()).split(",")[0]
        current, head = current_revision(engine), head_revision()
    except SQLAlchemyError as exc:
        return Check(name="store", status="fail", measured=f"{shown}: {str(exc).splitlines()[0][:200]}",
                     fix="check store_url in assay.toml / ASSAY_STORE_URL; is the server running and reachable?")
    finally:
        engine.dispose()
    if current != head:
        return Check(name="store", status="warn", measured=f"{shown}: schema at {current}, newest {head}; {extra}",
                     fix="any assay command that opens the store migrates it (back it up first)")
    if engine.dialect.name == "sqlite" and extra != "journal_mode=wal":
        return Check(name="store", status="warn", measured=f"{shown}: {extra}", fix="open it once with assay "
                     "(it sets WAL); another tool may have changed the journal mode")
    return Check(name="store", status="ok", measured=f"{shown}: schema at head ({head}); {extra}")


def check_embedding(settings: Settings) -> Check:
    """The embedding model loads offline and embeds one text, in a child process."""
    from assay._util.child import ChildDied, ChildFailed, ChildProcess, ChildTimeout
    from assay.signatures._embed_child import decode

    child = ChildProcess("assay.signatures._embed_child:serve", {"model": settings.embedding_model},
                         "embedding model", start_timeout_s=120, env={"HF_HUB_OFFLINE": "1"})
    try:
        info = child.start()
        start = time.perf_counter()
        vector = decode(child.call("encode", timeout_s=60, texts=["the agent refunded the order"]))
        ms = (time.perf_counter() - start) * 1000
    except ChildFailed as exc:
        hint = exc.attrs.get("hint")
        return Check(name="embedding model", status="fail", measured=f"{settings.embedding_model}: {exc}",
                     fix=f"install it: {hint}" if hint else "set embedding_model to 'all-MiniLM-L6-v2' or a local "
                     "sentence-transformers folder")
    except (ChildDied, ChildTimeout) as exc:
        return Check(name="embedding model", status="fail", measured=str(exc),
                     fix="reinstall torch (pip install torch==2.13.0) and sentence-transformers")
    finally:
        child.close()
    return Check(name="embedding model", status="ok",
                 measured=f"{settings.embedding_model}: loaded in {info['load_s']:.1f} s, 1 text -> "
                 f"{vector.shape[1]} dims in {ms:.0f} ms (offline)")


def long_prompt(tokens: int = LONG_PROMPT_TOKENS) -> str:
    """A judge-style prompt of well over ``tokens`` tokens (about 1.3 tokens per word here)."""
    turn = ("USER: I ordered a blue kettle last week, order #W2378156, and it arrived with a cracked lid. "
            "ASSISTANT: I am sorry to hear that. I can help you exchange it or return it for a refund. ")
    body = turn * (tokens // 50 + 1)
    return f"Read this conversation and say whether the agent followed the refund policy.\n{body}\nAnswer in JSON."


def check_local_judge(settings: Settings) -> Check:
    """The local judge answers a long prompt (>= 600 tokens) in its child process; prompt tokens/s."""
    from assay.exceptions import JudgeCrashed
    from assay.models.local import PORTABLE_BUILD_COMMAND, LocalLlamaJudge

    if settings.judge.provider != "local":
        return Check(name="local judge", status="skip", measured=f"the workspace judge is {settings.judge.provider}",
                     required=False)
    judge = LocalLlamaJudge(settings.judge.model_copy(update={"max_tokens": 8}), n_threads=settings.judge.n_threads)
    try:
        info = judge.load()
        prompt = long_prompt()
        n = judge.count_tokens(prompt)
        reply = judge.complete([{"role": "user", "content": prompt}])
    except JudgeCrashed as exc:
        return Check(name="local judge", status="fail", measured=str(exc).split(" (")[0],
                     fix=("rebuild llama-cpp-python portably: " + PORTABLE_BUILD_COMMAND) if exc.signal_name == "SIGILL"
                     else str(exc))
    except AssayError as exc:
        return Check(name="local judge", status="fail", measured=str(exc), fix=_fix_for(exc))
    finally:
        judge.close()
    rate = (reply.input_tokens or n) / reply.latency_s if reply.latency_s else 0.0
    features = _features(str(info.get("system_info", "")))
    return Check(name="local judge", status="ok",
                 measured=f"{judge.model_path.name}: loaded in {info['load_s']:.1f} s; {reply.input_tokens} prompt "
                 f"tokens answered in {reply.latency_s:.1f} s ({rate:.0f} tokens/s); llama-cpp-python "
                 f"{info.get('llama_cpp_version')} built with {features}")


def _features(system_info: str) -> str:
    """The x86 features llama.cpp reports as compiled in (``AVX2 = 1`` ...), e.g. ``AVX AVX2 FMA F16C``."""
    on = [part.split("=")[0].strip() for part in system_info.replace("|", " | ").split("|")
          if part.strip().endswith("= 1")]
    wanted = [f for f in on if f.split()[-1].isupper() and f.split()[-1] in
              ("SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "AVX512", "AVX512_VNNI", "AVX512_BF16", "AMX_INT8",
               "NEON", "BMI2")]
    return " ".join(f.split()[-1] for f in wanted) or system_info[:80] or "unknown features"


def check_api_judge(settings: Settings) -> Check:
    """A minimal call to the configured API judge (latency); skipped without an API key."""
    from assay.models.factory import make_judge

    js = settings.judge
    if js.provider == "local":
        return Check(name="API judge", status="skip", measured="no API judge configured ([judge] provider = local)",
                     required=False)
    if not js.api_key and not (js.provider == "openai" and js.base_url):
        return Check(name="API judge", status="skip", measured=f"{js.provider} {js.model}: no API key "
                     "(ASSAY_JUDGE__API_KEY or OPENAI_API_KEY)", required=False)
    judge = make_judge(js.model_copy(update={"max_retries": 0, "timeout_s": min(js.timeout_s, 15.0),
                                             "max_tokens": 5}))
    where = f"{js.provider} {judge_target(js.model, judge_endpoint(judge))}"
    start = time.perf_counter()
    try:
        judge.complete([{"role": "user", "content": "Reply with the single word: ok"}])
    except AssayError as exc:
        said = str(exc).removeprefix(judge_target(js.model, judge_endpoint(judge)) + ": ")
        return Check(name="API judge", status="fail", measured=f"{where}: {said}",
                     fix="check [judge] base_url, model and the API key; is the endpoint reachable from here?")
    return Check(name="API judge", status="ok", measured=f"{where}: answered in {time.perf_counter() - start:.2f} s")


def check_chromium() -> Check:
    """Debian's Chromium renders a page headless (the browser tests drive it)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    fix = "apt-get install chromium (the browser tests use Debian's Chromium, not a downloaded one)"
    if exe is None:
        return Check(name="chromium", status="fail", measured="chromium not found on PATH", fix=fix)
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--no-first-run", "--dump-dom", "data:text/html,<p id=x>assay-ok</p>"]
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return Check(name="chromium", status="fail", measured=f"{exe}: no page within 30 s", fix=fix)
    if "assay-ok" not in out.stdout:
        return Check(name="chromium", status="fail", measured=f"{exe}: exit {out.returncode}: "
                     f"{out.stderr.strip()[-200:]}", fix=fix)
    return Check(name="chromium", status="ok", measured=f"{exe}: rendered a page headless")


def run_checks(settings: Settings, dev: bool = False) -> list[Check]:
    """Run every check that applies (see the module docstring), in order; never raises for a failed check."""
    checks = [
        _timed("store", lambda: check_store(settings)),
        _timed("embedding model", lambda: check_embedding(settings)),
        _timed("local judge", lambda: check_local_judge(settings)),
        _timed("API judge", lambda: check_api_judge(settings)),
    ]
    if dev:
        checks.append(_timed("chromium", check_chromium))
    return checks


def exit_code(checks: list[Check]) -> int:
    """0 when no required check failed, else 1."""
    return int(any(c.status == "fail" and c.required for c in checks))
