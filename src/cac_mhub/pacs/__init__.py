"""PACS round trip: pull CT series from a PACS, score them with the normal chain, push SEG + SR back.

One concept a file: :mod:`.config` (the ``pacs:`` config block and its secrets), :mod:`.errors`
(one-line errors), :mod:`.dicomweb` and :mod:`.dimse` (the two adapters, same small interface in
:mod:`.base`), :mod:`.selection` (series selection on fetched metadata, before any pixel data),
:mod:`.ledger` (what was pushed and which studies were seen: ``pacs-state.sqlite``),
:mod:`.roundtrip` (pull -> score -> push, and the watch loop) and :mod:`.command` (the CLI).
Scoring itself is always ``cac-mhub run`` on a temporary folder, never a copy of its logic.
"""
