"""Files and batch jobs: ``/v1/files`` and ``/v1/batches``, run by a background runner."""
