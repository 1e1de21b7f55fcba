"""One module per family of file formats; each parser takes a file's bytes and returns a
:class:`rayfleet.text.document.ParsedDocument` or raises :class:`rayfleet.text.document.ParseError`.
:mod:`rayfleet.text.parsing` picks the parser by type."""
