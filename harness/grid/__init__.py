"""Many runs: ``plan`` (expand a grid file into validated configs, and their states), ``progress``
(the grid-level display), ``executors/`` (local worker processes, Ray, inline)."""
