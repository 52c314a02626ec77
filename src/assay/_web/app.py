"""The FastAPI app factory: one composition root, given settings and a store, no globals."""

from __future__ import annotations

from fastapi import FastAPI

from assay._store import Store
from assay._web.api import api_app
from assay._web.dashboard import install_dashboard
from assay._web.otlp import otlp_router
from assay._web.ui import install_ui
from assay.settings import Settings


def create_app(settings: Settings, store: Store) -> FastAPI:
    """Build the app: the OTLP/HTTP receiver (``/v1/traces``, ``/v1/logs``) and ``/health``.

    Args:
        settings: workspace settings (``settings.server`` configures the receiver).
        store: the store spans are written to (owned by the caller).
    """
    app = FastAPI(title="assay", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(otlp_router(settings.server, store))
    app.mount("/api/v1", api_app(settings, store))  # the REST API (API keys), docs at /api/v1/docs

    @app.get("/health", summary="liveness")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    install_ui(app, settings, store)  # the annotation app at /, /static
    install_dashboard(app)  # /dashboard: the report, live (login required)
    return app
