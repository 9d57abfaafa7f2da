"""``calicoctl explain``'s output: an ``Explanation`` as text for people, or a dict for tools.

What it is: formatting only (pure).  The text walks each enforcing side in evaluation order —
tiers, each policy with why it applies (its effective selector and the endpoint labels it
reads; the Kubernetes NetworkPolicy it came from), each rule tried with why it did not match,
the end of tier or the profiles — then the side's verdict.  ``as_dict`` is the same content
for ``-o json|yaml``.  What it is not: the computation (``pycalico.felix.calc.explain``).

Invariant: the text and the dict state the same verdicts and deciding rules.
"""

from __future__ import annotations

from typing import Any

from pycalico.felix.calc.explain import Explanation, SideTrace, owner_name, step_dict
from pycalico.felix.calc.explain_host import Stage
from pycalico.felix.calc.verdicts import DirectionTrace, OwnerStep, TierStep
from pycalico.felix.messages import PolicyID


def _packet_text(explanation: Explanation) -> str:
    packet = explanation.packet
    if packet.has_ports:
        return f"{packet.protocol} {packet.source_port} -> {packet.destination_port}"
    if packet.icmp_type is not None:
        return f"{packet.protocol} type {packet.icmp_type} code {packet.icmp_code}"
    return packet.protocol


def _rules_text(step: OwnerStep, indent: str) -> list[str]:
    lines = []
    for check in step.checks:
        if check.mismatch:
            lines.append(
                f"{indent}rule {check.index} ({check.action}): no match ({check.mismatch})"
            )
        elif check.action == "log":
            lines.append(f"{indent}rule {check.index} (log): matches, logged, continues")
        else:
            lines.append(f"{indent}rule {check.index} ({check.action}): MATCHES -> {check.action}")
    if step.outcome == "no-match":
        lines.append(f"{indent}no rule matches" if step.checks else f"{indent}(no rules)")
    if step.outcome == "skipped":
        lines.append(f"{indent}skipped (an earlier policy of the tier passed the packet)")
    return lines


def _tier_text(tier: TierStep, side: SideTrace) -> list[str]:
    lines = [f"  tier {tier.name} (default action {tier.default_action}):"]
    for step in tier.policies:
        lines.append(f"    {owner_name(step.owner)}")
        assert isinstance(step.owner, PolicyID)
        reason = side.reasons.get(step.owner)
        if reason is not None:
            if reason.kubernetes:
                lines.append(f"      from Kubernetes {reason.kubernetes}")
            labels = ", ".join(f"{k}={v}" for k, v in reason.labels.items()) or "-"
            lines.append(f"      selects the endpoint: {reason.selector}  [labels: {labels}]")
        lines += _rules_text(step, "      ")
    if tier.outcome == "end-of-tier-deny":
        lines.append("    end of tier: no policy allowed or passed it -> deny")
    elif tier.outcome == "end-of-tier-pass":
        lines.append("    end of tier: default action Pass -> next tier / profiles")
    elif tier.outcome == "pass":
        lines.append("    passed -> next tier / profiles")
    elif tier.outcome == "end-of-tier-next":
        lines.append("    end of tier: nothing decided -> next tier / stage")
    return lines


# Where each stage runs (``felix.calc.explain_host``'s walks of the rendered chains).
STAGE_TEXT = {
    "untracked": "untracked (doNotTrack) policy, raw table, before conntrack",
    "preDNAT": "pre-DNAT policy, mangle prerouting, before DNAT",
    "normal": "normal policy, filter table",
    "forward": "applyOnForward policy, filter forward",
    "workload-to-host": "workload to its own host: cali-wl-to-host",
    "local": "host to a local workload: filter output",
}


def _trace_text(trace: DirectionTrace, side: SideTrace, indent: str) -> list[str]:
    lines: list[str] = []
    for tier in trace.tiers:
        lines += [indent[2:] + line for line in _tier_text(tier, side)]
    for step in trace.profiles:
        lines.append(f"{indent}{owner_name(step.owner)}:")
        lines += _rules_text(step, indent + "  ")
    return lines


def _stage_text(stage: Stage, side: SideTrace) -> list[str]:
    lines = [f"  stage {stage.name} ({STAGE_TEXT[stage.name]}):"]
    lines += _trace_text(stage.trace, side, "    ")
    lines.append(f"    -> {stage.trace.verdict}: {stage.trace.reason}")
    return lines


def side_text(side: SideTrace, title: str) -> list[str]:
    trace = side.trace
    lines = [f"{title} {side.endpoint} (node {side.node}): {trace.verdict.upper()}"]
    if side.labels:
        lines.append("  labels: " + ", ".join(f"{k}={v}" for k, v in sorted(side.labels.items())))
    if side.stages:
        for stage in side.stages:
            lines += _stage_text(stage, side)
        lines.append(f"  => {trace.verdict}: {trace.reason}")
        return lines
    if trace.pre_policy:
        lines.append(f"  dropped before policy: {trace.pre_policy[0]}")
    elif not trace.tiers:
        lines.append("  no policy applies: profiles decide")
    lines += _trace_text(trace, side, "  ")
    lines.append(f"  => {trace.verdict}: {trace.reason}")
    return lines


def as_text(explanation: Explanation) -> str:
    lines = [
        f"Flow: {explanation.source.label} -> {explanation.destination.label}, "
        + _packet_text(explanation),
        f"Verdict: {explanation.verdict.upper()}",
        "",
    ]
    if explanation.egress is not None:
        lines += side_text(explanation.egress, "Egress of")
    else:
        lines.append("Egress: the source is not a Calico endpoint: no egress policy")
    lines.append("")
    if explanation.forward_out is not None:
        lines += side_text(explanation.forward_out, "Forwarded out through")
        lines.append("")
    if explanation.forward_in is not None:
        lines += side_text(explanation.forward_in, "Forwarded in through")
        lines.append("")
    if explanation.ingress is not None:
        lines += side_text(explanation.ingress, "Ingress of")
    else:
        lines.append("Ingress: the destination is not a Calico endpoint: no ingress policy")
    lines += [f"Note: {note}" for note in explanation.notes]
    return "\n".join(lines) + "\n"


def _tiers_dict(side: SideTrace, trace: DirectionTrace, stage: str) -> list[dict[str, Any]]:
    tiers = []
    for tier in trace.tiers:
        policies = []
        for step in tier.policies:
            entry = step_dict(step)
            assert isinstance(step.owner, PolicyID)
            reason = side.reasons.get(step.owner)
            if reason is not None:
                entry["selector"] = reason.selector
                entry["labels"] = reason.labels
                if reason.kubernetes:
                    entry["kubernetes"] = reason.kubernetes
            policies.append(entry)
        tiers.append(
            {"name": tier.name, "stage": stage, "defaultAction": tier.default_action,
             "outcome": tier.outcome, "policies": policies}
        )  # fmt: skip
    return tiers


def _stage_dict(stage: Stage) -> dict[str, Any]:
    trace = stage.trace
    failsafe = stage.failsafe or None
    return {
        "stage": stage.name,
        "verdict": trace.verdict,
        "reason": trace.reason,
        "failsafe": failsafe,
    }


def _side_dict(side: SideTrace | None) -> dict[str, Any] | None:
    """A side; ``tiers`` and ``profiles`` are those of every stage in order (a tier says its
    ``stage``), ``stages`` each stage's verdict, reason and the failsafe port it used."""
    if side is None:
        return None
    trace = side.trace
    stages = side.stages or (Stage("normal", trace),)
    return {
        "endpoint": side.endpoint,
        "kind": side.kind,
        "node": side.node,
        "labels": side.labels,
        "prePolicyDrop": trace.pre_policy[0] if trace.pre_policy else None,
        "tiers": [t for s in stages for t in _tiers_dict(side, s.trace, s.name)],
        "profiles": [step_dict(step) for s in stages for step in s.trace.profiles],
        "stages": [_stage_dict(s) for s in stages],
        "verdict": trace.verdict,
        "reason": trace.reason,
    }


def as_dict(explanation: Explanation) -> dict[str, Any]:
    packet = explanation.packet
    return {
        "source": explanation.source.label,
        "destination": explanation.destination.label,
        "packet": {
            "source": packet.source,
            "destination": packet.destination,
            "protocol": packet.protocol,
            "sourcePort": packet.source_port,
            "destinationPort": packet.destination_port,
            "icmpType": packet.icmp_type,
            "icmpCode": packet.icmp_code,
        },
        "verdict": explanation.verdict,
        "egress": _side_dict(explanation.egress),
        "forwardOut": _side_dict(explanation.forward_out),
        "forwardIn": _side_dict(explanation.forward_in),
        "ingress": _side_dict(explanation.ingress),
        "notes": list(explanation.notes),
    }
