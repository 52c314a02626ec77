"""The gate's outputs for CI: JUnit XML (one test case per evaluator) and a Markdown pull-request comment."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from assay.suite.gate import EXIT_CODES, GateItem, GateReport

MARKDOWN_MARKER = "<!-- assay-gate -->"
"""First line of the Markdown comment, so a CI job can find and update its earlier comment."""


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def dataset_label(version: int | None) -> str:
    """``"v3"``, or a note that the evaluator was activated without a ground-truth dataset."""
    return "none (activated without calibration data)" if version is None else f"v{version}"


def describe_baseline(report: GateReport) -> str:
    """One line: what the candidate was compared with, and how the units were paired."""
    if report.baseline is None:
        return "no baseline (thresholds only)"
    kind = "run" if report.baseline_kind == "run" else f"selection {report.baseline!r} scored as run"
    text = f"baseline {kind} {report.baseline_run}"
    p = report.pairing
    if p is None or p.key == "none":
        return text + ", independent samples (not paired by unit id, content hash or dataset item)"
    names = {"unit": "unit id", "content": "content hash", "item": f"item attribute {p.attribute!r}"}
    key = names[p.key]
    return text + f", paired by {key} ({p.n_pairs} of {p.n_candidate} candidate units matched)"


def item_details(item: GateItem) -> list[str]:
    """Readable lines about one evaluator: rates, comparison, lineage, flaky units."""
    lines = [f"pass rate {_pct(item.pass_rate)} on {item.n} scored of {item.n_units} units "
             f"({item.n_unscored} unscored, {item.n_errors} errors, {item.n_not_applicable} not applicable); "
             f"threshold {item.min_pass_rate:.3f}"]
    c = item.comparison
    if c is not None:
        lines.append(f"vs baseline {c.baseline_rate:.3f}: difference {c.diff:+.3f} "
                     f"(95% CI {c.ci_low:+.3f} to {c.ci_high:+.3f}), {c.method} p={c.p_value:.3g}"
                     + (f", {c.n_pairs} pairs ({c.candidate_only_pass} only candidate passed, "
                        f"{c.baseline_only_pass} only baseline passed)" if c.paired else ""))
    s = item.score_comparison
    if s is not None:
        lines.append(f"mean score {s.candidate_mean:.3f} vs {s.baseline_mean:.3f}: difference {s.diff:+.3f} "
                     f"(95% CI {s.ci_low:+.3f} to {s.ci_high:+.3f}), {s.method} p={s.p_value:.3g}")
    lines.append(f"lineage: evaluator {item.evaluator}@{item.evaluator_version}, judge {item.judge_model or '(code)'}, "
                 f"ground-truth dataset {dataset_label(item.dataset_version)}; baseline evaluator version "
                 f"{item.baseline_evaluator_version or '-'}, judge {item.baseline_judge_model or '-'}")
    lines += [*item.reasons, *item.notes]
    lines += [f"flaky unit {f.unit_id}: repeats {', '.join(f.outcomes)} -> {f.verdict}" for f in item.flaky_units]
    return lines


def to_junit(report: GateReport) -> str:
    """JUnit XML: one ``<testcase>`` per evaluator; a threshold miss or regression is a ``<failure>``,
    too many evaluator errors an ``<error>``, with the reasons as message and the details as text."""
    n_err = sum("errors" in i.failures for i in report.items) + sum(c.failure == "unknown"
                                                                     for c in report.usage_checks)
    n_fail = sum(bool(i.failures) and "errors" not in i.failures for i in report.items) + sum(
        c.failure == "regression" for c in report.usage_checks)
    counts = {"tests": str(len(report.items) + len(report.usage_checks)), "failures": str(n_fail),
              "errors": str(n_err)}
    root = ET.Element("testsuites", {"name": "assay gate", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": "assay gate", "skipped": "0", **counts})
    props = ET.SubElement(suite, "properties")
    for name, value in [("run_id", report.run_id), ("candidate", report.candidate), ("units", str(report.units)),
                        ("baseline", report.baseline or ""), ("baseline_run", report.baseline_run or ""),
                        ("pairing", report.pairing.key if report.pairing else "none"),
                        ("repeat", str(report.repeat)), ("alpha", str(report.alpha)),
                        ("max_unscored", str(report.max_unscored)), ("exit_code", str(report.exit_code))]:
        ET.SubElement(props, "property", name=name, value=value)
    for check in report.usage_checks:
        case = ET.SubElement(suite, "testcase", classname="assay.gate.usage", name=check.metric, time="0")
        if check.failure is not None:
            tag = "error" if check.failure == "unknown" else "failure"
            ET.SubElement(case, tag, type=check.failure, message=check.reason).text = check.reason
        ET.SubElement(case, "system-out").text = check.reason
    for item in report.items:
        case = ET.SubElement(suite, "testcase", classname="assay.gate", name=item.evaluator, time="0")
        if item.failures:
            tag = "error" if "errors" in item.failures else "failure"
            el = ET.SubElement(case, tag, type=",".join(item.failures), message="; ".join(item.reasons))
            el.text = "\n".join(item_details(item))
        ET.SubElement(case, "system-out").text = "\n".join(item_details(item))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _result(item: GateItem) -> str:
    if not item.failures:
        return "✅ pass"
    return "❌ " + ", ".join({"errors": "too many errors", "threshold": "threshold miss",
                              "regression": "regression"}[f] for f in item.failures)


def _usage_markdown(report: GateReport) -> list[str]:
    """The cost and latency checks as a table (nothing when none was asked for)."""
    if not report.usage_checks:
        return []
    out = ["", "### Cost and latency per unit", "",
           "| metric | candidate | baseline | increase (CI) | allowed | known on | result |",
           "|---|---|---|---|---|---|---|"]
    for c in report.usage_checks:
        def fmt(v: float | None, metric: str = c.metric) -> str:
            return "-" if v is None else f"${v:.4f}" if metric == "cost" else f"{v:.2f} s"

        inc = "-" if c.increase is None else f"{c.increase:+.1%} ({c.ci_low or 0:+.1%} to {c.ci_high or 0:+.1%})"
        result = "✅ pass" if c.passed else ("❌ regression" if c.failure == "regression" else "❌ unknown")
        out.append(f"| {c.metric} | {fmt(c.candidate_mean)} | {fmt(c.baseline_mean)} | {inc} | "
                   f"{c.max_increase:+.0%} | {c.n_candidate}/{c.candidate_units} vs {c.n_baseline}/{c.baseline_units} "
                   f"| {result} |")
    failing = [f"- **{c.metric}**: {_cell(c.reason)}" for c in report.usage_checks if not c.passed]
    return out + ([""] + failing if failing else [])


def to_markdown(report: GateReport) -> str:
    """A pull-request comment: verdict, one table row per evaluator, reasons, flaky units,
    redundant evaluators and lineage. Starts with :data:`MARKDOWN_MARKER`."""
    icon = "✅" if report.exit_code == 0 else "❌"
    out = [MARKDOWN_MARKER, f"## {icon} assay gate: {'pass' if report.passed else 'FAIL'} "
           f"(exit {report.exit_code}: {EXIT_CODES[report.exit_code]})", "",
           f"Candidate `{report.candidate}` ({report.units} units), {describe_baseline(report)}; "
           f"repeat {report.repeat}, alpha {report.alpha:g}, allowed drop {report.margin:g}, "
           f"error tolerance {report.max_unscored:.0%}.", "",
           "| evaluator | pass rate | threshold | baseline | difference (95% CI) | p | unscored + errors | result |",
           "|---|---|---|---|---|---|---|---|"]
    for i in report.items:
        c = i.comparison
        diff = "-" if c is None else f"{c.diff:+.3f} ({c.ci_low:+.3f} to {c.ci_high:+.3f})"
        p = "-" if c is None else f"{c.p_value:.3g} ({c.method})"
        out.append(f"| `{_cell(i.evaluator)}` | {_pct(i.pass_rate)} ({i.n}) | {i.min_pass_rate:.3f} | "
                   f"{_pct(i.baseline_pass_rate)} | {diff} | {p} | {i.n_unscored + i.n_errors} "
                   f"({i.error_share:.0%}) | {_result(i)} |")
    out += _usage_markdown(report)
    failing = [i for i in report.items if i.reasons]
    if failing:
        out += ["", "### Why it failed", *[f"- **{_cell(i.evaluator)}**: {r}" for i in failing for r in i.reasons]]
    noted = [(i.evaluator, n) for i in report.items for n in i.notes]
    if noted:
        out += ["", "### Notes", *[f"- **{_cell(e)}**: {n}" for e, n in noted]]
    if report.flaky_units:
        out += ["", f"### Flaky units ({len(report.flaky_units)})", "",
                "| evaluator | unit | repeats | decided |", "|---|---|---|---|",
                *[f"| `{_cell(f.evaluator)}` | `{_cell(f.unit_id)}` | {', '.join(f.outcomes)} | {f.verdict} |"
                  for f in report.flaky_units]]
    if report.redundant:
        out += ["", "### Probably redundant evaluators (|r| > 0.8 on common units)",
                *[f"- `{p.evaluator_a}` and `{p.evaluator_b}`: r = {p.r:.3f} on {p.n_units} units"
                  for p in report.redundant]]
    out += ["", "<details><summary>Lineage</summary>", "",
            f"- gate run `{report.run_id}`"
            + (f", baseline run `{report.baseline_run}`" if report.baseline_run else ""),
            *[f"- `{_cell(i.evaluator)}` version `{i.evaluator_version}`, judge `{i.judge_model or 'code'}`, "
              f"ground-truth dataset {dataset_label(i.dataset_version)}" for i in report.items],
            "", "</details>", ""]
    return "\n".join(out)
