"""The study as a pipeline: params.yaml's schema and the stage commands (config), one stage of DVC
(stage, prepare), process launchers and SLURM (launch, submit), and the result notebooks (report)."""
