"""Typed configuration: scenarios, topologies, image recipes; strict YAML loading with field paths."""
