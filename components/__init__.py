"""Components of the InstructUE platform: one package per stage, importable without Prefect."""
