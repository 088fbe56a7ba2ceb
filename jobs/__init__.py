from jobs.intake import candidate_intake_job, golden_data_job

__all__ = ["candidate_intake_job", "golden_data_job"]
