"""The worker: consumes logged interactions into the database, decides period
boundaries, runs the period-boundary retrain, evaluates the outgoing model and
publishes the new one (``worker.runner.Worker``)."""
