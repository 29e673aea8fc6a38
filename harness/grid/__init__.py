"""Many runs: ``plan`` (expand a grid file into validated configs, and their states), ``status``
(the status names), ``session`` (one start: plan -> skip finished -> run/resume -> collect, for
every executor), ``arms`` (arm names), ``progress`` (the grid-level display), ``executors/``
(local worker processes, Ray, Slurm, inline)."""
