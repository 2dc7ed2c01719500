"""The report layer: engine results -> words, numbers with units, JSON documents, tables, Markdown and HTML.
The CLI, the GUI and the exports all read results through it (none formats on its own), so the same
plan reads the same everywhere. No Qt, no torch."""
