"""The HTTP service: ``service.app.create_app`` builds the FastAPI application
(routes, schemas, the model holder that hot-swaps versions, the scorer)."""
