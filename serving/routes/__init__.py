"""Thin HTTP routes: parse and validate, call a plain function, shape the response."""
