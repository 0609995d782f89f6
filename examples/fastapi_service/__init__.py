"""A FastAPI service that answers support tickets through a streamflow pipeline."""
