"""llmenv inside other trainers: `trl` (a GRPOTrainer dataset and reward function) and `verl` (a parquet
export and verl's reward functions), on what `rows` shares (a task's problems as rows, the Task as JSON).

Each module speaks the other trainer's contract with llmenv's registered tasks and verifiers, and imports
nothing of that trainer, so it can be used (and tested) without it installed.
"""
