"""Selector benchmark: compiled evaluation against hand-written lambdas, and parse rate.

What this measures: evaluations per second of a mix of 11 selectors over 10,000 label maps,
with the hand-written Python lambda equivalent of each selector timed in the same run as the
reference (the figure is compiled/lambda throughput, 1.0 = as fast as hand-written code); the
closure-tree fallback is shown too.  Parse rate: uncached parses per second, against CPython
compiling the equivalent lambda source (its C parser and compiler) in the same run.

Run: ``.venv/bin/python -m bench.selectors`` (``--quick`` for a short smoke run).
"""

from __future__ import annotations

import gc
import json
import random
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from pycalico.model.selectors import Selector, parse
from pycalico.model.selectors.compiler import build_closures, generate_source

Labels = Mapping[str, str]

# (selector, hand-written equivalent)
CASES: list[tuple[str, Callable[[Labels], bool]]] = [
    ("app == 'web'", lambda labels: labels.get("app") == "web"),
    (
        "env in {'prod', 'staging', 'qa'}",
        lambda labels: labels.get("env") in {"prod", "staging", "qa"},
    ),
    ("has(tier)", lambda labels: "tier" in labels),
    (
        "app == 'db' && env == 'prod'",
        lambda labels: labels.get("app") == "db" and labels.get("env") == "prod",
    ),
    (
        "app == 'web' || app == 'api'",
        lambda labels: labels.get("app") == "web" or labels.get("app") == "api",
    ),
    ("name contains 'cache'", lambda labels: "name" in labels and "cache" in labels["name"]),
    (
        "version starts with 'v1.'",
        lambda labels: "version" in labels and labels["version"].startswith("v1."),
    ),
    (
        "!has(projectcalico.org/namespace)",
        lambda labels: "projectcalico.org/namespace" not in labels,
    ),
    ("env not in {'dev', 'test'}", lambda labels: labels.get("env") not in {"dev", "test"}),
    (
        "env != 'dev' && !(app in {'db', 'cache'})",
        lambda labels: labels.get("env") != "dev" and labels.get("app") not in {"db", "cache"},
    ),
    (
        "(app == 'web' && has(tier)) || (env == 'prod' && version ends with '-rc')",
        lambda labels: (
            (labels.get("app") == "web" and "tier" in labels)
            or (
                labels.get("env") == "prod"
                and "version" in labels
                and labels["version"].endswith("-rc")
            )
        ),
    ),
]


def label_maps(count: int, seed: int = 7) -> list[dict[str, str]]:
    rng = random.Random(seed)
    choices = {
        "app": ["web", "api", "db", "cache", "worker"],
        "env": ["prod", "staging", "qa", "dev", "test"],
        "tier": ["frontend", "backend"],
        "name": ["redis-cache-0", "web-1", "api-7", "cachet", "db-main"],
        "version": ["v1.2.3", "v1.4.0-rc", "v2.0.0", "v2.1.0-rc"],
        "projectcalico.org/namespace": ["default", "kube-system", "prod"],
        "projectcalico.org/orchestrator": ["k8s"],
        "pod-template-hash": ["5d8f7c9b", "7c4b9d2a"],
    }
    maps = [
        {key: rng.choice(values) for key, values in choices.items() if rng.random() < 0.7}
        for _ in range(count)
    ]
    # Real label maps come decoded from JSON: their keys are fresh string objects, not the very
    # objects the lambdas above hold as constants (which would let dict lookups match by
    # identity and favour the reference).
    decoded: list[dict[str, str]] = json.loads(json.dumps(maps))
    return decoded


def throughputs(
    functions: list[Callable[[Labels], bool]], maps: list[dict[str, str]], rounds: int
) -> list[float]:
    """Best-of-rounds evaluations per second of each function over ``maps``.  The functions
    take turns within each round so that drifts in machine speed hit them alike."""
    best = [float("inf")] * len(functions)
    for _ in range(rounds):
        for index, function in enumerate(functions):
            start = time.perf_counter()
            for labels in maps:
                function(labels)
            best[index] = min(best[index], time.perf_counter() - start)
    return [len(maps) / seconds for seconds in best]


def rate(action: Callable[[], Any], items: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return items / best


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    maps = label_maps(1_000 if quick else 10_000)
    rounds = 2 if quick else 9
    selectors: list[Selector] = [parse(text) for text, _ in CASES]
    for (text, reference), selector in zip(CASES, selectors, strict=True):
        for labels in maps:
            if selector.evaluate(labels) != reference(labels):
                raise SystemExit(f"benchmark is wrong: {text!r} disagrees on {labels}")

    gc.disable()
    try:
        print(f"Selector evaluation over {len(maps)} label maps (best of {rounds}):")
        print(
            f"  {'selector':<58} {'compiled/s':>11} {'lambda/s':>11} {'ratio':>6} {'closures':>6}"
        )
        totals = {"compiled": 0.0, "lambda": 0.0, "closures": 0.0}
        for (text, reference), selector in zip(CASES, selectors, strict=True):
            compiled, hand, closures = throughputs(
                [selector.evaluate, reference, build_closures(selector.root)], maps, rounds
            )
            # Time per evaluation adds up across the mix; rates do not.
            totals["compiled"] += 1 / compiled
            totals["lambda"] += 1 / hand
            totals["closures"] += 1 / closures
            print(
                f"  {text[:58]:<58} {compiled:>11,.0f} {hand:>11,.0f}"
                f" {compiled / hand:>6.2f} {closures / hand:>6.2f}"
            )
        mix = {name: len(CASES) / seconds for name, seconds in totals.items()}
        print(
            f"  mix: compiled {mix['compiled']:,.0f}/s, lambda {mix['lambda']:,.0f}/s,"
            f" ratio compiled/lambda {mix['compiled'] / mix['lambda']:.2f},"
            f" closures/lambda {mix['closures'] / mix['lambda']:.2f}"
        )

        texts = [text for text, _ in CASES] * (20 if quick else 200)
        sources = [generate_source(s.root) for s in selectors] * (20 if quick else 200)
        uncached = parse.__wrapped__

        def parse_all() -> None:
            for text in texts:
                uncached(text)

        def parse_and_compile_all() -> None:
            for text in texts:
                uncached(text).evaluate  # noqa: B018 - first access compiles

        def python_compile_all() -> None:
            for source in sources:
                compile(source, "<bench>", "eval")

        def cached_all() -> None:
            for text in texts:
                parse(text)

        parsed = rate(parse_all, len(texts), rounds)
        parsed_compiled = rate(parse_and_compile_all, len(texts), rounds)
        python = rate(python_compile_all, len(sources), rounds)
        cached = rate(cached_all, len(texts), rounds)
        print(f"Parsing the same {len(CASES)} selectors (best of {rounds}):")
        print(f"  parse (uncached):              {parsed:>10,.0f}/s")
        print(f"  parse + compile (uncached):    {parsed_compiled:>10,.0f}/s")
        print(f"  CPython compile of the lambda: {python:>10,.0f}/s (reference)")
        print(f"  parse from the cache:          {cached:>10,.0f}/s")
        print(
            f"  ratio parse/CPython compile {parsed / python:.2f},"
            f" parse+compile/CPython compile {parsed_compiled / python:.2f}"
        )
    finally:
        gc.enable()
    print(f"Python {sys.version.split()[0]}. Reproduce: .venv/bin/python -m bench.selectors")


if __name__ == "__main__":
    main(sys.argv[1:])
