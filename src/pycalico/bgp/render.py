"""Printing a ``BirdConfig`` as BIRD 2 configuration text (``templates/bird.conf.j2``).

What it is: the template and the one filter it needs (quoting a string for BIRD).  What it is
not: any decision about what the configuration says (``processor``), nor writing the file or
reloading BIRD (``confd``).

Invariants: ``render`` is a pure function of its argument (same ``BirdConfig``, same text, byte
for byte), so confd can compare texts to decide whether BIRD needs a reload; the text always ends
with exactly one newline.
"""

from __future__ import annotations

from functools import lru_cache

import jinja2

from pycalico.bgp.config import BirdConfig, bird_safe

TEMPLATE = "bird.conf.j2"


def bird_string(value: str) -> str:
    """``value`` inside a BIRD double-quoted string.  BIRD's lexer has no escapes, so a string
    holding a double quote or a line break cannot be written (the processor drops such
    passwords with a note before they get here)."""
    if not bird_safe(value):
        raise ValueError(f"{value!r} cannot be written as a BIRD string")
    return value


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("pycalico.bgp", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )
    environment.filters["bird_string"] = bird_string
    return environment


def render(config: BirdConfig) -> str:
    """The whole ``bird.cfg`` text for ``config``."""
    text = _environment().get_template(TEMPLATE).render(c=config)
    return text.rstrip("\n") + "\n"
