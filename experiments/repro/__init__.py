"""paper_repro.md and README's "What we found", rendered from templates and summary files.

No number in either document is typed by hand: a template names a source (a committed summary
file, registered in :data:`experiments.repro.sources.SOURCES`) and a key, and the renderer
writes the value with a named format. ``python experiments/report.py`` renders; ``--check``
fails when a committed document differs from a fresh render. How to add a section, a source or a
claim: docs/report.md.

* :mod:`experiments.repro.sources` -- the source registry and key lookup;
* :mod:`experiments.repro.render` -- placeholders, formats, documents;
* :mod:`experiments.repro.claims` -- the one-screen verdict block from ``docs/repro/claims.toml``;
* :mod:`experiments.repro.lint` -- the checks that keep numbers out of templates.
"""
