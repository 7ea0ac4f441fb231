"""The web layer: ``service.app.create_app`` builds the FastAPI application (routes,
request and response schemas, errors, middleware) on the serving engine (``engine/``)."""
