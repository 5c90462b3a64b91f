"""llmenv inside other trainers: `llmenv.integrations.verl` (a reward function and a dataset export for verl).

Each module speaks the other trainer's contract with llmenv's registered tasks and verifiers, and imports
nothing of that trainer, so it can be used (and tested) without it installed.
"""
