"""Helpers for the fine-tuning course: what would clutter a lesson, never the lesson itself."""
