"""The ADAS platform's core: domain logic for steps 15-18, with no Dagster in it."""
