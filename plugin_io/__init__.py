"""What every plugin here shares at its edges, and nothing else: one package both plugins import.

- ``log_events``: the one-line ``event key=value`` log format, written and parsed in one place;
- ``settings_types``: setting values typed by a plugin's JSON Schema (text, Decimal, enums);
- ``singer_lines``: Singer message lines written whole to standard output.

The tap and the target never import each other; what both need lives here, and this package
imports nothing else of the project, so it can never pull one plugin into the other.
"""
