"""Helpers for the fine-tuning course: what would clutter a lesson, never the lesson itself."""

from helpers.quiet import mute_import_warnings

mute_import_warnings()  # before any helper imports a library that warns on import (helpers.quiet)
