"""The recommendation API: ``create_app(settings)`` builds the FastAPI app."""

from serving.app import create_app

__all__ = ["create_app"]
